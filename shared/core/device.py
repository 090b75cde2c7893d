"""An Intune managed device and its action results, as the lifecycle sees them.

The Graph adapter (shared/adapters/graph.py) builds these from Graph JSON; nothing here knows
Graph's wire format beyond the property names. Matching rules: docs/contract.md#device-resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
            return "".join(ch for ch in (self.imei or "") if ch.isdigit()) == value
        return False


@dataclass(frozen=True)
class ActionResult:
    action_name: str
    state: str  # none, pending, canceled, active, done, failed, notSupported
    started_at: datetime | None
    last_updated_at: datetime | None
    passcode: str | None = field(default=None, repr=False)  # secret: never logged or stored


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
