"""`python -m tools.openapi` rewrites openapi/apiDefinition.swagger.json (placeholder host) from the
app's own OpenAPI builder (shared/api/openapi.py); tests/unit/test_openapi.py keeps it current."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.api.openapi import openapi_document, render

OPENAPI_DIR = Path(__file__).resolve().parent.parent / "openapi"
OPENAPI_FILE = "apiDefinition.swagger.json"


def main() -> int:
    OPENAPI_DIR.mkdir(exist_ok=True)
    (OPENAPI_DIR / OPENAPI_FILE).write_text(render(openapi_document()), encoding="utf-8")
    print(f"wrote openapi/{OPENAPI_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
