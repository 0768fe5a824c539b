"""What the tests and the benchmark share: emulated stores, a shaping proxy, seeded data,
streamer on a real socket, tokens.

Rules: this package imports `streamer` and third-party libraries, never `tests` or `bench`
(both import it); it holds parts, not fixtures (tests/conftest.py wraps them in fixtures);
it is not part of the `streamer` distribution (pyproject.toml installs `streamer*` only).
"""
