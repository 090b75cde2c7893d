"""The managedDevice shape served by the simulator: properties per Graph version and the enum
values each version knows.

The v1.0 lists mirror msgraph-sdk 1.65 (`msgraph.generated.models.managed_device`), the beta
lists mirror msgraph-beta-sdk. tests/integration/test_simulator.py checks the v1.0 lists against
the installed msgraph-sdk so they cannot drift silently.
"""

from __future__ import annotations

from typing import Any, Final

V1: Final = "v1.0"
BETA: Final = "beta"
VERSIONS: Final = (V1, BETA)

ENTITY_TYPE: Final = "#microsoft.graph.managedDevice"

# Structural properties of microsoft.graph.managedDevice in v1.0 (served when present).
V1_PROPERTIES: Final[tuple[str, ...]] = (
    "id",
    "userId",
    "deviceName",
    "managedDeviceOwnerType",
    "enrolledDateTime",
    "enrollmentProfileName",
    "lastSyncDateTime",
    "operatingSystem",
    "complianceState",
    "jailBroken",
    "managementAgent",
    "osVersion",
    "easActivated",
    "easDeviceId",
    "easActivationDateTime",
    "azureADRegistered",
    "deviceEnrollmentType",
    "activationLockBypassCode",
    "emailAddress",
    "azureADDeviceId",
    "deviceRegistrationState",
    "deviceCategoryDisplayName",
    "isSupervised",
    "exchangeLastSuccessfulSyncDateTime",
    "exchangeAccessState",
    "exchangeAccessStateReason",
    "remoteAssistanceSessionUrl",
    "remoteAssistanceSessionErrorDetails",
    "isEncrypted",
    "userPrincipalName",
    "model",
    "manufacturer",
    "imei",
    "complianceGracePeriodExpirationDateTime",
    "serialNumber",
    "phoneNumber",
    "androidSecurityPatchLevel",
    "userDisplayName",
    "configurationManagerClientEnabledFeatures",
    "wiFiMacAddress",
    "deviceHealthAttestationState",
    "subscriberCarrier",
    "meid",
    "totalStorageSpaceInBytes",
    "freeStorageSpaceInBytes",
    "managedDeviceName",
    "partnerReportedThreatState",
    "requireUserEnrollmentApproval",
    "managementCertificateExpirationDate",
    "iccid",
    "udid",
    "notes",
    "ethernetMacAddress",
    "physicalMemoryInBytes",
    "managementState",
    "deviceActionResults",
)

# Navigation properties: accepted in $select, never expanded by the simulator.
V1_NAVIGATION: Final[frozenset[str]] = frozenset(
    {
        "deviceCategory",
        "deviceCompliancePolicyStates",
        "deviceConfigurationStates",
        "logCollectionRequests",
        "users",
        "windowsProtectionState",
    }
)

# Properties only beta has.
BETA_ONLY_PROPERTIES: Final[tuple[str, ...]] = (
    "deviceType",
    "ownerType",
    "joinType",
    "chassisType",
    "skuFamily",
    "skuNumber",
    "processorArchitecture",
    "lostModeState",
    "aadRegistered",
    "autopilotEnrolled",
    "azureActiveDirectoryDeviceId",
    "bootstrapTokenEscrowed",
    "enrolledByUserPrincipalName",
    "managementFeatures",
    "securityPatchLevel",
    "specificationVersion",
    "retireAfterDateTime",
    "preferMdmOverGroupPolicyAppliedDateTime",
    "deviceFirmwareConfigurationInterfaceManaged",
    "roleScopeTagIds",
    "windowsActiveMalwareCount",
    "windowsRemediatedMalwareCount",
    "hardwareInformation",
    "configurationManagerClientHealthState",
    "configurationManagerClientInformation",
    "chromeOSDeviceInfo",
    "usersLoggedOn",
    "cloudPcRemoteActionResults",
)
BETA_PROPERTIES: Final[tuple[str, ...]] = V1_PROPERTIES + BETA_ONLY_PROPERTIES
BETA_NAVIGATION: Final[frozenset[str]] = V1_NAVIGATION | {
    "detectedApps",
    "deviceHealthScriptStates",
    "managedDeviceMobileAppConfigurationStates",
    "securityBaselineStates",
    "assignmentFilterEvaluationStatusDetails",
}

# Enum values v1.0 knows (msgraph-sdk 1.65). Values outside these sets are beta-only.
V1_ENUMS: Final[dict[str, frozenset[str]]] = {
    "deviceEnrollmentType": frozenset(
        {
            "unknown",
            "userEnrollment",
            "deviceEnrollmentManager",
            "appleBulkWithUser",
            "appleBulkWithoutUser",
            "windowsAzureADJoin",
            "windowsBulkUserless",
            "windowsAutoEnrollment",
            "windowsBulkAzureDomainJoin",
            "windowsCoManagement",
            "windowsAzureADJoinUsingDeviceAuth",
            "appleUserEnrollment",
            "appleUserEnrollmentWithServiceAccount",
            "unknownFutureValue",
        }
    ),
    "managementAgent": frozenset(
        {
            "eas",
            "mdm",
            "easMdm",
            "intuneClient",
            "easIntuneClient",
            "configurationManagerClient",
            "configurationManagerClientMdm",
            "configurationManagerClientMdmEas",
            "unknown",
            "jamf",
            "googleCloudDevicePolicyController",
            "microsoft365ManagedMdm",
            "msSense",
        }
    ),
    "managedDeviceOwnerType": frozenset({"unknown", "company", "personal", "unknownFutureValue"}),
    "complianceState": frozenset(
        {"unknown", "compliant", "noncompliant", "conflict", "error", "inGracePeriod", "configManager"}
    ),
    "managementState": frozenset(
        {
            "managed",
            "retirePending",
            "retireFailed",
            "wipePending",
            "wipeFailed",
            "unhealthy",
            "deletePending",
            "retireIssued",
            "wipeIssued",
            "wipeCanceled",
            "retireCanceled",
            "discovered",
            "unknownFutureValue",
        }
    ),
    "deviceRegistrationState": frozenset(
        {
            "notRegistered",
            "registered",
            "revoked",
            "keyConflict",
            "approvalPending",
            "certificateReset",
            "notRegisteredPendingEnrollment",
            "unknown",
        }
    ),
    "exchangeAccessState": frozenset({"none", "unknown", "allowed", "blocked", "quarantined"}),
    "exchangeAccessStateReason": frozenset(
        {
            "none",
            "unknown",
            "exchangeGlobalRule",
            "exchangeIndividualRule",
            "exchangeDeviceRule",
            "exchangeUpgrade",
            "exchangeMailboxPolicy",
            "other",
            "compliant",
            "notCompliant",
            "notEnrolled",
            "unknownLocation",
            "mfaRequired",
            "azureADBlockDueToAccessPolicy",
            "compromisedPassword",
            "deviceNotKnownWithManagedApp",
        }
    ),
    "partnerReportedThreatState": frozenset(
        {
            "unknown",
            "activated",
            "deactivated",
            "secured",
            "lowSeverity",
            "mediumSeverity",
            "highSeverity",
            "unresponsive",
            "compromised",
            "misconfigured",
        }
    ),
}

# Beta enum members numbered after the enum's `unknownFutureValue` sentinel (Microsoft Graph's
# evolvable enums): Graph serves them as `unknownFutureValue` unless the request carries
# `Prefer: include-unknown-enum-members`. Beta's deviceEnrollmentType currently ends with the
# sentinel, so the member below is hypothetical: it is modelled on the real beta
# `androidDeviceOwnerEnrollmentTokenType.corporateOwnedDedicatedDeviceWithAzureADSharedMode`
# (an Android Enterprise mode with no deviceEnrollmentType of its own). Only fleet devices added
# for this behaviour use it.
UNKNOWN_ENUM_MEMBERS: Final[dict[str, frozenset[str]]] = {
    "deviceEnrollmentType": frozenset({"androidEnterpriseDedicatedDeviceWithAzureADSharedMode"}),
}
UNKNOWN_FUTURE_VALUE: Final = "unknownFutureValue"
PREFER_UNKNOWN_ENUM_MEMBERS: Final = "include-unknown-enum-members"

# Values every managedDevice carries unless the fleet says otherwise (what Intune returns for a
# healthy, managed device). Properties absent here and in the fleet are served as null.
DEVICE_DEFAULTS: Final[dict[str, Any]] = {
    "userId": None,
    "managedDeviceOwnerType": "company",
    "complianceState": "compliant",
    "jailBroken": "False",
    "managementAgent": "mdm",
    "easActivated": False,
    "easDeviceId": "",
    "easActivationDateTime": "0001-01-01T00:00:00Z",
    "azureADRegistered": True,
    "deviceEnrollmentType": "unknown",
    "enrollmentProfileName": "",
    "activationLockBypassCode": None,
    "deviceRegistrationState": "registered",
    "deviceCategoryDisplayName": "Unknown",
    "isSupervised": False,
    "exchangeLastSuccessfulSyncDateTime": "0001-01-01T00:00:00Z",
    "exchangeAccessState": "none",
    "exchangeAccessStateReason": "none",
    "remoteAssistanceSessionUrl": None,
    "remoteAssistanceSessionErrorDetails": None,
    "isEncrypted": True,
    "imei": "",
    "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
    "phoneNumber": "",
    "androidSecurityPatchLevel": "",
    "configurationManagerClientEnabledFeatures": None,
    "wiFiMacAddress": "",
    "deviceHealthAttestationState": None,
    "subscriberCarrier": "",
    "meid": "",
    "totalStorageSpaceInBytes": 0,
    "freeStorageSpaceInBytes": 0,
    "partnerReportedThreatState": "unknown",
    "requireUserEnrollmentApproval": None,
    "iccid": None,
    "udid": None,
    "notes": None,
    "ethernetMacAddress": None,
    "physicalMemoryInBytes": 0,
    "managementState": "managed",
    "deviceActionResults": [],
    "deviceType": "unknown",
    "joinType": "unknown",
    "chassisType": "unknown",
    "skuFamily": "",
    "skuNumber": 0,
    "processorArchitecture": "unknown",
    "lostModeState": "disabled",
    "aadRegistered": True,
    "autopilotEnrolled": False,
    "bootstrapTokenEscrowed": False,
    "managementFeatures": "none",
    "securityPatchLevel": None,
    "specificationVersion": None,
    "retireAfterDateTime": "0001-01-01T00:00:00Z",
    "preferMdmOverGroupPolicyAppliedDateTime": "0001-01-01T00:00:00Z",
    "deviceFirmwareConfigurationInterfaceManaged": False,
    "roleScopeTagIds": ["0"],
    "windowsActiveMalwareCount": 0,
    "windowsRemediatedMalwareCount": 0,
    "hardwareInformation": None,
    "configurationManagerClientHealthState": None,
    "configurationManagerClientInformation": None,
    "chromeOSDeviceInfo": [],
    "usersLoggedOn": [],
    "cloudPcRemoteActionResults": [],
}

# Properties the list route can filter with `eq` (others are ignored, like Intune does).
FILTERABLE: Final[tuple[str, ...]] = (
    "serialNumber",
    "imei",
    "azureADDeviceId",
    "userPrincipalName",
    "deviceName",
)


def properties(version: str) -> tuple[str, ...]:
    return V1_PROPERTIES if version == V1 else BETA_PROPERTIES


def selectable(version: str) -> dict[str, str]:
    """Lower-cased name -> canonical name of everything `$select` accepts in `version`."""
    names = set(properties(version)) | (V1_NAVIGATION if version == V1 else BETA_NAVIGATION)
    return {name.lower(): name for name in names}


def downgrade_enum(prop: str, value: Any) -> Any:
    """Map a beta-only enum value to what v1.0 serves: `unknownFutureValue` where v1.0's enum has
    that member, otherwise `unknown`."""
    known = V1_ENUMS.get(prop)
    if known is None or not isinstance(value, str) or value in known:
        return value
    return "unknownFutureValue" if "unknownFutureValue" in known else "unknown"


def hide_unknown_enum_member(prop: str, value: Any, extra: dict[str, frozenset[str]] | None = None) -> Any:
    """Beta without `Prefer: include-unknown-enum-members`: a member after the sentinel reads as
    `unknownFutureValue`."""
    members = UNKNOWN_ENUM_MEMBERS.get(prop, frozenset()) | (extra or {}).get(prop, frozenset())
    return UNKNOWN_FUTURE_VALUE if isinstance(value, str) and value in members else value


def prefers_unknown_enum_members(prefer_headers: list[str]) -> bool:
    """Whether any `Prefer` header lists `include-unknown-enum-members` (comma-separated
    preferences, case-insensitive, parameters after ';' ignored)."""
    for header in prefer_headers:
        for preference in header.split(","):
            if preference.split(";", 1)[0].strip().lower() == PREFER_UNKNOWN_ENUM_MEMBERS:
                return True
    return False
