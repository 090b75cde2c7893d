"""Which remote actions Intune accepts for a device, from Intune's point of view
(docs/contract.md#platform-and-action-matrix).

The simulator answers 400 BadRequest for an action Intune does not support on the device's
platform. This is deliberately independent of the product's own classifier in shared/.
"""

from __future__ import annotations

import re
from typing import Any, Final

RESET_PASSCODE: Final = "resetPasscode"
REMOTE_LOCK: Final = "remoteLock"
ACTIONS: Final = (RESET_PASSCODE, REMOTE_LOCK)

APPLE_MOBILE_OS: Final = frozenset({"ios", "ipados", "visionos"})
APPLE_USER_ENROLLMENT: Final = frozenset(
    {"appleUserEnrollment", "appleUserEnrollmentWithServiceAccount", "appleAccountDrivenUserEnrollment"}
)
ANDROID_ENTERPRISE_CORPORATE: Final = frozenset(
    {
        "androidEnterpriseDedicatedDevice",
        "androidEnterpriseFullyManaged",
        "androidEnterpriseCorporateWorkProfile",
    }
)
ANDROID_AOSP: Final = frozenset({"androidAOSPUserOwnedDeviceEnrollment", "androidAOSPUserlessDeviceEnrollment"})
WINDOWS_MOBILE_TYPES: Final = frozenset({"windowsPhone", "winMO6"})

_VERSION = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.\d+)*\s*$")


def major_minor(version: Any) -> tuple[int, int] | None:
    """`"8.1.0"` -> (8, 1); None when the string is not a dotted number."""
    if not isinstance(version, str):
        return None
    match = _VERSION.match(version)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def platform_of(device: dict[str, Any]) -> str:
    """Platform row of docs/contract.md#platform-and-action-matrix (same names as `device.platform` in events)."""
    os_name = str(device.get("operatingSystem") or "").strip().lower()
    enrollment = device.get("deviceEnrollmentType")
    device_type = device.get("deviceType")
    if enrollment in APPLE_USER_ENROLLMENT:
        return "ios-user-enrollment"
    if os_name in APPLE_MOBILE_OS:
        return "ios"
    if os_name.startswith("android") or device_type in {
        "android",
        "androidForWork",
        "androidEnterprise",
        "androidnGMS",
    }:
        if enrollment == "androidEnterpriseDedicatedDevice":
            return "android-dedicated"
        if enrollment == "androidEnterpriseFullyManaged":
            return "android-fully-managed"
        if enrollment == "androidEnterpriseCorporateWorkProfile":
            return "android-corporate-work-profile"
        if device_type == "androidForWork":
            return "android-work-profile"
        if enrollment in ANDROID_AOSP or device.get("managementAgent") == "intuneAosp":
            return "android-aosp"
        return "android-device-admin"
    if os_name in {"macos", "mac os x", "macosx"}:
        return "macos"
    if os_name.startswith("windows"):
        return "windows-mobile" if device_type in WINDOWS_MOBILE_TYPES else "windows"
    return "unknown"


def supports(device: dict[str, Any], action: str) -> bool:
    """Whether Intune accepts `action` for `device` (else Graph answers 400 BadRequest)."""
    platform = platform_of(device)
    if action == RESET_PASSCODE:
        if platform == "android-work-profile":
            version = major_minor(device.get("osVersion"))
            return version is not None and version >= (8, 0)
        if platform == "android-device-admin":
            version = major_minor(device.get("osVersion"))
            return version is not None and version < (7, 0)
        return platform in {
            "ios",
            "android-dedicated",
            "android-fully-managed",
            "android-corporate-work-profile",
            "android-aosp",
            "windows-mobile",
        }
    if action == REMOTE_LOCK:
        return platform in {"ios", "macos", "windows-mobile"} or platform.startswith("android-")
    return False


def is_android(device: dict[str, Any]) -> bool:
    return platform_of(device).startswith("android-")


def is_macos(device: dict[str, Any]) -> bool:
    return platform_of(device) == "macos"
