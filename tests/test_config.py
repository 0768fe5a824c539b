"""Settings from the environment and flags: the yes/no `gzip` setting."""

from __future__ import annotations

import argparse

import pytest

from streamer.config import ConfigError, add_arguments, load_settings


def flags(*argv: str) -> dict[str, str | None]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(list(argv)))


def test_gzip_is_off_by_default() -> None:
    assert load_settings({}).gzip is False


@pytest.mark.parametrize(("text", "value"), [("1", True), ("on", True), ("False", False)])
def test_gzip_from_the_environment(text: str, value: bool) -> None:
    assert load_settings({"STREAMER_GZIP": text}).gzip is value


def test_bare_gzip_flag_turns_it_on_and_wins_over_the_variable() -> None:
    assert load_settings({"STREAMER_GZIP": "off"}, flags("--gzip")).gzip is True
    assert load_settings({"STREAMER_GZIP": "on"}, flags("--gzip", "no")).gzip is False
    assert load_settings({"STREAMER_GZIP": "on"}, flags()).gzip is True


def test_malformed_gzip_value() -> None:
    with pytest.raises(ConfigError, match="STREAMER_GZIP: must be one of"):
        load_settings({"STREAMER_GZIP": "maybe"})
