"""An Intune managed device and its action results, as the lifecycle sees them.

The Graph adapter (shared/adapters/graph.py) builds these from Graph JSON; nothing here knows
Graph's wire format beyond the property names. Matching rules: docs/contract.md#device-resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.platforms import Action, DeviceTraits


@dataclass(frozen=True)
class IntuneDevice:
    id: str
    name: str | None
    operating_system: str | None
    os_version: str | None
    device_type: str | None
    enrollment_type: str | None
    management_agent: str | None
    owner_type: str | None
    user_principal_name: str | None
    serial_number: str | None
    imei: str | None
    azure_ad_device_id: str | None

    @classmethod
    def from_graph(cls, doc: dict[str, Any]) -> IntuneDevice:
        def text(name: str) -> str | None:
            value = doc.get(name)
            return value if isinstance(value, str) and value != "" else None

        return cls(
            id=str(doc.get("id", "")),
            name=text("deviceName"),
            operating_system=text("operatingSystem"),
            os_version=text("osVersion"),
            device_type=text("deviceType"),
            enrollment_type=text("deviceEnrollmentType"),
            management_agent=text("managementAgent"),
            owner_type=text("managedDeviceOwnerType"),
            user_principal_name=text("userPrincipalName"),
            serial_number=text("serialNumber"),
            imei=text("imei"),
            azure_ad_device_id=text("azureADDeviceId"),
        )

    @property
    def traits(self) -> DeviceTraits:
        return DeviceTraits(
            operating_system=self.operating_system,
            os_version=self.os_version,
            device_type=self.device_type,
            enrollment_type=self.enrollment_type,
            management_agent=self.management_agent,
        )

    def matches(self, kind: str, value: str) -> bool:
        """Client-side verification of a $filter match: Graph ignores filters it does not support."""
        if kind == "intuneDeviceId":
            return self.id.lower() == value.lower()
        if kind == "azureAdDeviceId":
            return (self.azure_ad_device_id or "").lower() == value.lower()
        if kind == "serialNumber":
            return (self.serial_number or "").strip().casefold() == value.strip().casefold()
        if kind == "imei":
            return imei_matches(self.imei, value)
        return False


@dataclass(frozen=True)
class ActionResult:
    action_name: str
    state: str  # none, pending, canceled, active, done, failed, notSupported
    started_at: datetime | None
    last_updated_at: datetime | None
    passcode: str | None = field(default=None, repr=False)  # secret: never logged or stored
    unlock_pin: str | None = field(default=None, repr=False)  # secret: macOS remote lock's recovery PIN

    @classmethod
    def from_graph(cls, entry: dict[str, Any]) -> ActionResult:
        """One entry of a managed device's `deviceActionResults`, whatever its `@odata.type`.

        Graph types an entry `#microsoft.graph.resetPasscodeActionResult` (the passcode),
        `#microsoft.graph.remoteLockActionResult` (the unlock PIN) or the base type; Microsoft's
        own examples write the type without the `#` or leave it out. So the type is not read:
        `passcode` and `unlockPin` are taken from any entry, member names matched without regard
        to case, non-empty text only (docs/decisions/0012-untyped-action-results.md). Times are
        ISO 8601 (Graph's seven fractional digits are cut to six); one without an offset is UTC.
        The state is Graph's string as sent ("done", "failed", ...; any case, or a state newer
        than this code): the lifecycle compares it in lower case and waits on any it does not know.
        """
        members = {str(k).lower(): v for k, v in entry.items()}

        def text(name: str) -> str | None:
            value = members.get(name.lower())
            return value if isinstance(value, str) and value else None

        return cls(
            action_name=text("actionName") or "",
            state=text("actionState") or "none",
            started_at=graph_datetime(members.get("startdatetime")),
            last_updated_at=graph_datetime(members.get("lastupdateddatetime")),
            passcode=text("passcode"),
            unlock_pin=text("unlockPin"),
        )


# Which secret of a result the user must type, per Graph action: resetPasscodeActionResult.passcode
# (Android's new passcode) and remoteLockActionResult.unlockPin (the Mac's Find My recovery PIN).
SECRET_KIND = {"resetpasscode": "passcode", "remotelock": "unlockPin"}


def revealable_secret(result: ActionResult) -> tuple[str, str] | None:
    """(kind, secret) of a result, or None when it carries none (iOS, a PIN Intune hid already).
    docs/contract.md#passcode-reveal; the kind follows the result's action name, any casing."""
    kind = SECRET_KIND.get(result.action_name.lower())
    secret = result.passcode if kind == "passcode" else result.unlock_pin if kind == "unlockPin" else None
    return (kind, secret) if kind is not None and secret else None


def graph_datetime(value: Any) -> datetime | None:
    """A Graph `DateTimeOffset` (ISO 8601, e.g. `2026-11-25T10:00:00.1234567Z`) as an aware
    datetime; None when absent or not a time. A time without an offset is taken as UTC."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def imei_digits(value: str | None) -> str:
    return "".join(ch for ch in (value or "") if "0" <= ch <= "9")


def imei_matches(stored: str | None, requested: str) -> bool:
    """docs/contract.md#device-resolution, IMEI forms: equal digits, or equal on the first 14 when
    one side is 14 digits and the other 15 (the Luhn check digit, never checked itself), or when
    either side is a 16-digit IMEISV (14 digits + a 2-digit software version)."""
    have, want = imei_digits(stored), imei_digits(requested)
    if len(have) < 14 or len(want) < 14 or len(have) > 16 or len(want) > 16:
        return False
    if have == want:
        return True
    lengths = {len(have), len(want)}
    return (lengths == {14, 15} or 16 in lengths) and have[:14] == want[:14]


def luhn_check_digit(digits14: str) -> str:
    """The Luhn check digit that makes a 14-digit IMEI body a valid 15-digit IMEI."""
    total = 0
    for index, ch in enumerate(reversed(digits14)):
        n = int(ch)
        if index % 2 == 0:  # every second digit from the right, starting next to the check digit
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return str((10 - total % 10) % 10)


def apple_grouping(digits15: str) -> str:
    """Apple's way of writing an IMEI: `NN NNNNNN NNNNNN N`."""
    return f"{digits15[:2]} {digits15[2:8]} {digits15[8:14]} {digits15[14:]}"


def imei_lookup_forms(requested: str) -> list[str]:
    """The stored forms to ask Graph for, one exact `$filter` each, most likely first; the lookup
    stops at the first form with a verified match (docs/decisions/0010-imei-lookup.md).

    15 digits: as given, Apple's grouping, the 14-digit body. 14 digits: as given, then the
    15-digit form with the Luhn check digit, digits and grouped. 16 (IMEISV): as given, then the
    14-digit body's 15-digit forms, then the body itself."""
    digits = imei_digits(requested)
    if len(digits) == 15:
        forms = [digits, apple_grouping(digits), digits[:14]]
    elif len(digits) in (14, 16):
        body = digits[:14]
        full = body + luhn_check_digit(body)
        forms = [digits, full, apple_grouping(full)] + ([body] if len(digits) == 16 else [])
    else:
        forms = [requested]
    return list(dict.fromkeys(forms))


def our_action_result(
    results: Sequence[ActionResult], action: Action, action_started_at: datetime, tolerance: timedelta
) -> ActionResult | None:
    """The result of this request's own action call: the newest result of `action` that started at
    or after the call (less the clock skew allowed between this app and Intune). Intune keeps one
    result per action, so an older result belongs to an earlier request. The one rule for the
    workflow's reconciliation and confirmation and for the passcode reveal."""
    since = action_started_at - tolerance
    candidates = [
        r
        for r in results
        if r.action_name.lower() == action.graph_name.lower() and r.started_at is not None and r.started_at >= since
    ]
    return max(candidates, key=lambda r: r.started_at or since, default=None)
