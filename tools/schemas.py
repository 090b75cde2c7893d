"""JSON Schemas of the request and the outcome event, generated from the contract models.

`python -m tools.schemas` rewrites schemas/*.json; a test keeps the committed copies current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.core.contract import OutcomeEvent, ResetRequest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schemas() -> dict[str, dict[str, Any]]:
    request = ResetRequest.model_json_schema(mode="validation")
    request["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    request["description"] = (
        "A request to reset one Intune-managed device's passcode (version 1). Queue messages may be "
        "plain UTF-8 JSON or base64-encoded JSON, at most 64 KiB; requestId is required on the queue."
    )
    event = OutcomeEvent.model_json_schema(mode="serialization")
    event["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    event["description"] = "Outcome event on the results queue: CloudEvents 1.0, structured mode, JSON."
    return {"reset-request.schema.json": request, "outcome-event.schema.json": event}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema), encoding="utf-8")
        print(f"wrote schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
