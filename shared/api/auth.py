"""Who is calling the HTTP API, and may they do this (docs/contract.md#http-api).

Every keyed route is protected by the Functions host's `function` key. When App Service
Authentication (Easy Auth) runs in front of the app (`AUTH_REQUIRE_ROLES=true`), the caller must
also hold an app role, read from the `X-MS-CLIENT-PRINCIPAL` header that Easy Auth sets after it
validated the token. Without Easy Auth anybody can send that header, so it is then ignored entirely.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PRINCIPAL_HEADER = "x-ms-client-principal"
FUNCTION_KEY_CALLER = "function-key caller"
_MAX_PRINCIPAL_HEADER = 32 * 1024
# Claims that name the caller when the principal's name_typ claim is absent (app-only tokens).
_NAME_FALLBACKS = ("name", "preferred_username", "upn", "appid", "azp", "oid")


class Role(StrEnum):
    """App roles of the Function App's Entra ID app registration."""

    SUBMIT = "PasscodeReset.Submit"
    READ = "PasscodeReset.Read"
    REVEAL_PASSCODE = "PasscodeReset.RevealPasscode"
    APPROVE = "PasscodeReset.Approve"


@dataclass(frozen=True)
class Caller:
    """The authorized caller; `name` is what the audit log records."""

    name: str
    roles: frozenset[str] = frozenset()
    # The accountable identity (roles mode only): recorded as `submittedBy` and used as the
    # approver, compared for four eyes (docs/contract.md#accountable-caller).
    principal: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Denied:
    """401 (no readable principal in roles mode) or 403 (the role is missing)."""

    status: int
    detail: str
    caller: Caller | None = None


def authorize(headers: Mapping[str, str], role: Role, *, require_roles: bool) -> Caller | Denied:
    """The caller of a keyed route, or why they may not call it.

    `headers` must have lower-case names. The function key was already checked by the host.
    """
    if not require_roles:
        return Caller(FUNCTION_KEY_CALLER)
    principal = read_client_principal(headers.get(PRINCIPAL_HEADER))
    if principal is None:
        return Denied(401, "App Service Authentication did not identify the caller (no readable client principal)")
    if role.value not in principal.roles:
        return Denied(403, f"the caller lacks the app role {role.value}", principal)
    return principal


def read_client_principal(header: str | None) -> Caller | None:
    """Parse Easy Auth's base64 JSON principal: `{"auth_typ", "claims": [{"typ", "val"}], "name_typ",
    "role_typ"}`. Roles are the claims whose type is `role_typ` or `roles`. None when unreadable."""
    if not header or len(header) > _MAX_PRINCIPAL_HEADER:
        return None
    text = header.strip()
    try:
        document = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        return None
    claims = [
        (claim["typ"], claim["val"])
        for claim in document["claims"]
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str)
    ]
    role_types = {"roles", _text(document.get("role_typ"))} - {""}
    roles = frozenset(value for kind, value in claims if kind in role_types)
    return Caller(name=_principal_name(document, claims), roles=roles, principal=_accountable_name(document, claims))


def _principal_name(document: dict[str, Any], claims: list[tuple[str, str]]) -> str:
    by_type: dict[str, str] = {}
    for kind, value in claims:
        by_type.setdefault(kind, value)
    for kind in (_text(document.get("name_typ")), *_NAME_FALLBACKS):
        if kind and by_type.get(kind):
            return by_type[kind][:256]
    return "unnamed principal"


def _accountable_name(document: dict[str, Any], claims: list[tuple[str, str]]) -> str:
    """The claim named by `name_typ`, else `preferred_username`, else `upn` (a sign-in name, not a
    display name); an app-only caller has none of them and is named as in the audit log."""
    by_type: dict[str, str] = {}
    for kind, value in claims:
        by_type.setdefault(kind, value)
    for kind in (_text(document.get("name_typ")), "preferred_username", "upn"):
        if kind and by_type.get(kind, "").strip():
            return by_type[kind].strip()[:256]
    return _principal_name(document, claims)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
