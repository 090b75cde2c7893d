"""The published JSON Schemas are generated from the contract models and kept current."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tools.schemas import SCHEMA_DIR, render, schemas

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_committed_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        committed = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert committed == render(schema), f"schemas/{name} is stale: run python -m tools.schemas"


def test_every_sample_request_validates_against_the_request_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "reset-request.schema.json").read_text())
    samples = sorted(SAMPLES.glob("*.json"))
    assert samples
    for path in samples:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_request_schema_refuses_two_identifiers() -> None:
    schema = json.loads((SCHEMA_DIR / "reset-request.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    document = {"requestId": "X-1", "requestedBy": "desk", "device": {"imei": "356938035643809", "serialNumber": "A"}}
    assert not validator.is_valid(document)
