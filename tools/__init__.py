"""Build-time writers (JSON Schemas, the OpenAPI document). Not deployed (.funcignore)."""
