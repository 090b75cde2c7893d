"""docs/contract.md#platform-and-action-matrix, row by row: what a device's properties decide."""

from __future__ import annotations

import pytest

from shared.core.platforms import MATRIX, Action, DeviceTraits, Platform, Scope, choose_action, parse_version


def traits(os: str | None, version: str | None = "14", device_type: str | None = None,
           enrollment: str | None = None, agent: str | None = "mdm") -> DeviceTraits:
    return DeviceTraits(os, version, device_type, enrollment, agent)


ROWS = [
    # (case, traits, allow_remote_lock, platform, action, scope)
    ("iPhone", traits("iOS", "17.5", "iPhone", "appleBulkWithUser"), False, Platform.IOS, Action.REMOVE_PASSCODE,
     Scope.DEVICE),
    ("iPad", traits("iPadOS", "17.1", "iPad", "deviceEnrollmentManager"), False, Platform.IOS,
     Action.REMOVE_PASSCODE, Scope.DEVICE),
    ("Vision Pro", traits("visionOS", "1.2", "unknown", "appleBulkWithUser"), False, Platform.IOS,
     Action.REMOVE_PASSCODE, Scope.DEVICE),
    ("Apple user enrollment", traits("iOS", "17", "iPhone", "appleUserEnrollment"), False,
     Platform.IOS_USER_ENROLLMENT, None, None),
    ("Apple user enrollment with service account", traits("iOS", "16", "iPhone",
     "appleUserEnrollmentWithServiceAccount"), False, Platform.IOS_USER_ENROLLMENT, None, None),
    ("account-driven user enrollment", traits("iPadOS", "17", "iPad", "appleAccountDrivenUserEnrollment"), False,
     Platform.IOS_USER_ENROLLMENT, None, None),
    ("dedicated", traits("Android", "13", "androidEnterprise", "androidEnterpriseDedicatedDevice"), False,
     Platform.ANDROID_DEDICATED, Action.RESET_PASSCODE, Scope.DEVICE),
    ("fully managed", traits("Android", "14", "androidEnterprise", "androidEnterpriseFullyManaged"), False,
     Platform.ANDROID_FULLY_MANAGED, Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    ("corporate work profile", traits("Android", "12", "androidEnterprise",
     "androidEnterpriseCorporateWorkProfile"), False, Platform.ANDROID_CORPORATE_WORK_PROFILE,
     Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    ("personal work profile 14", traits("Android", "14", "androidForWork", "userEnrollment"), False,
     Platform.ANDROID_WORK_PROFILE, Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    ("personal work profile 8.0", traits("Android", "8.0", "androidForWork", "userEnrollment"), False,
     Platform.ANDROID_WORK_PROFILE, Action.RESET_PASSCODE, Scope.WORK_PROFILE),
    ("personal work profile 7.1.2", traits("Android", "7.1.2", "androidForWork", "userEnrollment"), False,
     Platform.ANDROID_WORK_PROFILE, None, None),
    ("personal work profile, unparseable version", traits("Android", "Oreo", "androidForWork"), False,
     Platform.ANDROID_WORK_PROFILE, None, None),
    ("AOSP user-owned", traits("Android", "12", "android", "androidAOSPUserOwnedDeviceEnrollment"), False,
     Platform.ANDROID_AOSP, Action.RESET_PASSCODE, Scope.DEVICE),
    ("AOSP userless", traits("Android", "10", "android", "androidAOSPUserlessDeviceEnrollment"), False,
     Platform.ANDROID_AOSP, Action.RESET_PASSCODE, Scope.DEVICE),
    ("AOSP by management agent", traits("Android", "11", "android", "unknown", "intuneAosp"), False,
     Platform.ANDROID_AOSP, Action.RESET_PASSCODE, Scope.DEVICE),
    ("device admin 6.0.1", traits("Android", "6.0.1", "android", "userEnrollment"), False,
     Platform.ANDROID_DEVICE_ADMIN, Action.RESET_PASSCODE, Scope.DEVICE),
    ("device admin 7.0", traits("Android", "7.0", "android", "userEnrollment"), False,
     Platform.ANDROID_DEVICE_ADMIN, None, None),
    ("device admin 10", traits("Android", "10", "android"), False, Platform.ANDROID_DEVICE_ADMIN, None, None),
    ("device admin, empty version", traits("Android", "", "android"), False, Platform.ANDROID_DEVICE_ADMIN,
     None, None),
    ("device admin, device enrollment manager 6.0", traits("Android", "6.0", "android", "deviceEnrollmentManager"),
     False, Platform.ANDROID_DEVICE_ADMIN, Action.RESET_PASSCODE, Scope.DEVICE),
    ("device admin, enrollment type unknown 5.1", traits("Android", "5.1", "android", "unknown"), False,
     Platform.ANDROID_DEVICE_ADMIN, Action.RESET_PASSCODE, Scope.DEVICE),
    # Issue 12: an Android Enterprise enrollment type the matrix does not know is unknown, not device
    # admin, whatever its version (6.0 would pass the device admin gate).
    ("new Android Enterprise type", traits("Android", "6.0", "androidEnterprise",
     "androidEnterpriseDedicatedDeviceWithAzureADSharedMode"), False, Platform.UNKNOWN, None, None),
    ("Android Enterprise served as unknownFutureValue", traits("Android", "13", "androidEnterprise",
     "unknownFutureValue"), False, Platform.UNKNOWN, None, None),
    ("Android Enterprise device type, no enrollment type", traits("Android", "13", "androidEnterprise"), False,
     Platform.UNKNOWN, None, None),
    ("Android Enterprise type on a device-admin device type", traits("Android", "6.0", "android",
     "androidEnterpriseSomethingNew"), False, Platform.UNKNOWN, None, None),
    ("macOS without permission", traits("macOS", "14.5", "macMDM"), False, Platform.MACOS, None, None),
    ("macOS with allowRemoteLock", traits("macOS", "14.5", "macMDM"), True, Platform.MACOS, Action.REMOTE_LOCK,
     Scope.DEVICE),
    ("Windows Phone", traits("Windows", "10.0.15254", "windowsPhone"), False, Platform.WINDOWS_MOBILE,
     Action.RESET_PASSCODE, Scope.DEVICE),
    ("Windows Mobile 6", traits("Windows", "6.5", "winMO6"), False, Platform.WINDOWS_MOBILE, Action.RESET_PASSCODE,
     Scope.DEVICE),
    ("Windows desktop", traits("Windows", "10.0.22631", "desktop", "windowsAzureADJoin"), False, Platform.WINDOWS,
     None, None),
    ("Windows desktop, remote lock allowed", traits("Windows", "10.0.22631", "desktop"), True, Platform.WINDOWS,
     None, None),
    ("iOS, remote lock allowed changes nothing", traits("iOS", "17", "iPhone"), True, Platform.IOS,
     Action.REMOVE_PASSCODE, Scope.DEVICE),
    ("Linux", traits("Linux", "22.04", "linux"), False, Platform.UNKNOWN, None, None),
    ("no operating system", traits(None, None), False, Platform.UNKNOWN, None, None),
]


@pytest.mark.parametrize(("case", "device", "allow_lock", "platform", "action", "scope"), ROWS,
                         ids=[row[0] for row in ROWS])
def test_matrix_row(case: str, device: DeviceTraits, allow_lock: bool, platform: Platform,
                    action: Action | None, scope: Scope | None) -> None:
    decision = choose_action(device, allow_remote_lock=allow_lock)
    assert (decision.platform, decision.action, decision.scope) == (platform, action, scope)
    if action is None:
        assert decision.why_not


def test_every_platform_row_is_exercised_by_the_table() -> None:
    assert {row[3] for row in ROWS} == set(Platform) == set(MATRIX)


def test_enrollment_type_is_matched_case_insensitively() -> None:
    decision = choose_action(traits("android", "13", "ANDROIDENTERPRISE", "AndroidEnterpriseDedicatedDevice"),
                             allow_remote_lock=False)
    assert decision.platform is Platform.ANDROID_DEDICATED


def test_unsupported_version_reason_names_the_rule_and_the_reported_version() -> None:
    decision = choose_action(traits("Android", "7.1.2", "androidForWork"), allow_remote_lock=False)
    assert "8.0" in (decision.why_not or "") and "7.1.2" in (decision.why_not or "")


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("8", (8, 0)), ("8.0", (8, 0)), ("7.1.2", (7, 1, 2)), ("14 (UP1A)", (14, 0)), ("10.0.22631.2861", (10, 0, 22631)),
     (" 9.0", (9, 0)), ("", None), (None, None), ("Oreo", None), ("v8", None)],
)
def test_parse_version(raw: str | None, parsed: tuple[int, ...] | None) -> None:
    assert parse_version(raw) == parsed


@pytest.mark.parametrize("enrollment", ["androidEnterpriseDedicatedDeviceWithAzureADSharedMode", "unknownFutureValue"])
def test_unknown_android_enterprise_enrollment_reason_names_the_enrollment_type(enrollment: str) -> None:
    decision = choose_action(traits("Android", "13", "androidEnterprise", enrollment), allow_remote_lock=False)
    assert decision.platform is Platform.UNKNOWN and f"'{enrollment}'" in (decision.why_not or "")
    assert "7.0" not in (decision.why_not or "")  # not the device administrator gate
