"""docs/contract.md#platform-and-action-matrix as one table: what Intune supports for each platform and enrollment type.

`classify` maps a device's Graph (beta) properties to a platform row; `choose_action` turns the row
into the remote action to call, or a reason why there is none. Both are pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Platform(StrEnum):
    IOS = "ios"
    IOS_USER_ENROLLMENT = "ios-user-enrollment"
    ANDROID_DEDICATED = "android-dedicated"
    ANDROID_FULLY_MANAGED = "android-fully-managed"
    ANDROID_CORPORATE_WORK_PROFILE = "android-corporate-work-profile"
    ANDROID_WORK_PROFILE = "android-work-profile"
    ANDROID_AOSP = "android-aosp"
    ANDROID_DEVICE_ADMIN = "android-device-admin"
    MACOS = "macos"
    WINDOWS_MOBILE = "windows-mobile"
    WINDOWS = "windows"
    UNKNOWN = "unknown"


class Action(StrEnum):
    """The action as reported in events; `graph_name` is the endpoint that performs it."""

    REMOVE_PASSCODE = "removePasscode"
    RESET_PASSCODE = "resetPasscode"
    REMOTE_LOCK = "remoteLock"

    @property
    def graph_name(self) -> str:
        return "remoteLock" if self is Action.REMOTE_LOCK else "resetPasscode"


class Scope(StrEnum):
    DEVICE = "device"
    WORK_PROFILE = "workProfile"


@dataclass(frozen=True)
class DeviceTraits:
    """The device properties the decision depends on (Graph beta names in the docstrings)."""

    operating_system: str | None  # operatingSystem
    os_version: str | None  # osVersion
    device_type: str | None  # deviceType (beta only)
    enrollment_type: str | None  # deviceEnrollmentType (beta has the Android Enterprise values)
    management_agent: str | None  # managementAgent


@dataclass(frozen=True)
class Decision:
    platform: Platform
    action: Action | None
    scope: Scope | None
    why_not: str | None = None

    @property
    def supported(self) -> bool:
        return self.action is not None


@dataclass(frozen=True)
class Rule:
    """One row of the matrix: the action it allows and, optionally, a gate on the OS version."""

    action: Action | None
    scope: Scope | None
    gate: Callable[[tuple[int, ...] | None], bool] | None = None
    gate_text: str = ""
    why_not: str = ""
    needs_remote_lock_permission: bool = False


def _at_least(minimum: tuple[int, ...]) -> Callable[[tuple[int, ...] | None], bool]:
    return lambda version: version is not None and version >= minimum


def _below(limit: tuple[int, ...]) -> Callable[[tuple[int, ...] | None], bool]:
    return lambda version: version is not None and version < limit


MATRIX: dict[Platform, Rule] = {
    Platform.IOS: Rule(Action.REMOVE_PASSCODE, Scope.DEVICE),
    Platform.IOS_USER_ENROLLMENT: Rule(
        None, None, why_not="Intune has no passcode action for Apple user enrollment (BYOD) devices"
    ),
    Platform.ANDROID_DEDICATED: Rule(Action.RESET_PASSCODE, Scope.DEVICE),
    Platform.ANDROID_FULLY_MANAGED: Rule(Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    Platform.ANDROID_CORPORATE_WORK_PROFILE: Rule(Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    Platform.ANDROID_WORK_PROFILE: Rule(
        Action.RESET_PASSCODE,
        Scope.WORK_PROFILE,
        gate=_at_least((8, 0)),
        gate_text="work profile passcode reset needs Android 8.0 or later",
    ),
    Platform.ANDROID_AOSP: Rule(Action.RESET_PASSCODE, Scope.DEVICE),
    Platform.ANDROID_DEVICE_ADMIN: Rule(
        Action.RESET_PASSCODE,
        Scope.DEVICE,
        gate=_below((7, 0)),
        gate_text="device administrator passcode reset works only below Android 7.0",
    ),
    Platform.MACOS: Rule(
        Action.REMOTE_LOCK,
        Scope.DEVICE,
        needs_remote_lock_permission=True,
        why_not="macOS has no passcode reset; remote lock runs only when the request sets allowRemoteLock",
    ),
    Platform.WINDOWS_MOBILE: Rule(Action.RESET_PASSCODE, Scope.DEVICE),
    Platform.WINDOWS: Rule(
        None, None, why_not="Windows has no remote PIN reset; Windows Hello PIN reset is user self-service"
    ),
    Platform.UNKNOWN: Rule(None, None, why_not="no supported passcode action for this operating system"),
}

_USER_ENROLLMENT = {"appleuserenrollment", "appleuserenrollmentwithserviceaccount", "appleaccountdrivenuserenrollment"}
_AOSP_ENROLLMENT = {"androidaospuserowneddeviceenrollment", "androidaospuserlessdeviceenrollment"}
_ANDROID_ENTERPRISE = {
    "androidenterprisededicateddevice": Platform.ANDROID_DEDICATED,
    "androidenterprisefullymanaged": Platform.ANDROID_FULLY_MANAGED,
    "androidenterprisecorporateworkprofile": Platform.ANDROID_CORPORATE_WORK_PROFILE,
}
# What legacy Android device administrator enrollments report (Company Portal, device enrollment
# manager, or nothing). Any other enrollment type on an Android device that no row above claims is
# a newer Android Enterprise (or unknown) mode: `unknown`, never device admin.
_DEVICE_ADMIN_ENROLLMENT = {"", "unknown", "userenrollment", "deviceenrollmentmanager"}
_APPLE_MOBILE = {"ios", "ipados", "visionos"}
_WINDOWS_MOBILE_TYPES = {"windowsphone", "winmo6"}


def classify(device: DeviceTraits) -> Platform:
    """The matrix row of a device, from its operating system and enrollment properties."""
    return _classify(device)[0]


def _classify(device: DeviceTraits) -> tuple[Platform, str | None]:
    """The row, and for an `unknown` Android device why it is not a known row."""
    os_name = _norm(device.operating_system)
    enrollment = _norm(device.enrollment_type)
    device_type = _norm(device.device_type)
    agent = _norm(device.management_agent)

    if os_name in _APPLE_MOBILE:
        return (Platform.IOS_USER_ENROLLMENT if enrollment in _USER_ENROLLMENT else Platform.IOS), None
    if os_name == "macos":
        return Platform.MACOS, None
    if os_name.startswith("windows"):
        return (Platform.WINDOWS_MOBILE if device_type in _WINDOWS_MOBILE_TYPES else Platform.WINDOWS), None
    if os_name.startswith("android") or device_type.startswith("android") or enrollment.startswith("android"):
        if enrollment in _AOSP_ENROLLMENT or agent == "intuneaosp":
            return Platform.ANDROID_AOSP, None
        if enrollment in _ANDROID_ENTERPRISE:
            return _ANDROID_ENTERPRISE[enrollment], None
        if device_type == "androidforwork":
            return Platform.ANDROID_WORK_PROFILE, None
        if device_type == "androidenterprise" or enrollment not in _DEVICE_ADMIN_ENROLLMENT:
            shown = (device.enrollment_type or "none").strip()[:80]
            return Platform.UNKNOWN, (
                f"Android enrollment type '{shown}' is not one this app knows a passcode action for "
                "(not an Android Enterprise, AOSP or device administrator type in its platform matrix)"
            )
        return Platform.ANDROID_DEVICE_ADMIN, None
    return Platform.UNKNOWN, None


def choose_action(device: DeviceTraits, *, allow_remote_lock: bool) -> Decision:
    """The action Microsoft supports for this device, or why there is none."""
    platform, note = _classify(device)
    rule = MATRIX[platform]
    if rule.action is None:
        return Decision(platform, None, None, note or rule.why_not)
    if rule.needs_remote_lock_permission and not allow_remote_lock:
        return Decision(platform, None, None, rule.why_not)
    if rule.gate is not None:
        version = parse_version(device.os_version)
        if not rule.gate(version):
            shown = device.os_version if version is not None else "an unparseable version"
            return Decision(platform, None, None, f"{rule.gate_text}; the device reports {shown!s:.40}")
    return Decision(platform, rule.action, rule.scope)


_VERSION = re.compile(r"^\s*(\d{1,4})(?:\.(\d{1,4}))?(?:\.(\d{1,6}))?")


def parse_version(raw: str | None) -> tuple[int, ...] | None:
    """Leading numeric components of an OS version ('8.1.0', '14', '7.1.2 (N2G47H)'), else None."""
    if not raw:
        return None
    match = _VERSION.match(raw)
    if match is None:
        return None
    parts = tuple(int(part) for part in match.groups() if part is not None)
    return parts + (0,) * (2 - len(parts)) if len(parts) < 2 else parts


def _norm(value: str | None) -> str:
    return (value or "").strip().lower()
