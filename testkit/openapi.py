"""The shipped OpenAPI document (streamer/openapi.json) and validators for its schemas.

Rules: the document is read from the installed package, as clients get it; a schema is
validated by JSON Schema 2020-12 with formats checked, references resolved in the document.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema_rs

DOCUMENT_BYTES = resources.files("streamer").joinpath("openapi.json").read_bytes()
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_BYTES)
DOCUMENT_URI = "urn:streamer:openapi"


def schema_validator(pointer: str) -> jsonschema_rs.Validator:
    """A JSON Schema validator for the schema at `pointer` inside the document."""
    registry = jsonschema_rs.Registry([(DOCUMENT_URI, DOCUMENT)], draft=jsonschema_rs.Draft202012)
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry, validate_formats=True
    )
