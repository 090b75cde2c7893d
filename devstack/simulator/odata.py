"""The small part of OData the simulator understands: `$select`, `<prop> eq '<literal>'` filters
and opaque `$skiptoken`s."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from . import schema

_EQ_FILTER: Final = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_STARTSWITH_FILTER: Final = re.compile(
    r"^\s*startswith\(\s*([A-Za-z][A-Za-z0-9]*)\s*,\s*'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE
)


class ODataError(ValueError):
    """A query option Graph would refuse with 400 BadRequest."""


def query_option(query: dict[str, str], name: str) -> str | None:
    """Graph accepts system query options with and without the `$` prefix, any case."""
    wanted = {f"${name}".lower(), name.lower()}
    for key, value in query.items():
        if key.lower() in wanted:
            return value
    return None


def parse_select(value: str | None, version: str) -> list[str] | None:
    """Canonical property names, or None when there is no `$select`. Unknown names -> ODataError."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        return None
    known = schema.selectable(version)
    selected: list[str] = []
    for name in names:
        canonical = known.get(name.lower())
        if canonical is None:
            raise ODataError(f"Could not find a property named '{name}' on type 'microsoft.graph.managedDevice'.")
        if canonical not in selected:
            selected.append(canonical)
    return selected


def parse_eq_filter(value: str | None) -> tuple[str, str] | None:
    """`(property, literal)` for `<prop> eq '<literal>'` on a filterable property; None for anything
    else (no filter, unsupported property, functions, `and`/`or`, unparseable): Intune then
    ignores the filter and returns every device."""
    if value is None:
        return None
    match = _EQ_FILTER.match(value)
    if match is None:
        return None
    prop, literal = match.group(1), match.group(2).replace("''", "'")
    canonical = {p.lower(): p for p in schema.FILTERABLE}.get(prop.lower())
    if canonical is None:
        return None
    return canonical, literal


def parse_startswith_filter(value: str | None) -> tuple[str, str] | None:
    """`(property, literal)` for `startswith(<prop>,'<literal>')` on a filterable property, else None.
    What the list route then does with it is a setting (`startswith`): Microsoft's documentation
    does not say whether managedDevices honours startswith on these properties."""
    if value is None:
        return None
    match = _STARTSWITH_FILTER.match(value)
    if match is None:
        return None
    prop, literal = match.group(1), match.group(2).replace("''", "'")
    canonical = {p.lower(): p for p in schema.FILTERABLE}.get(prop.lower())
    if canonical is None:
        return None
    return canonical, literal


def encode_skiptoken(offset: int) -> str:
    raw = f"RFNwdHBhZ2luZw|{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
        prefix, _, offset = raw.partition("|")
        if prefix != "RFNwdHBhZ2luZw" or not offset.isdigit():
            raise ValueError(raw)
        return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ODataError("The skip token provided is invalid or expired.") from exc


def parse_top(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ODataError(f"Invalid value '{value}' for $top query option found.")
    return min(int(value), 1000)
