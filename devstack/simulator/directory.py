"""Entra ID groups for the simulator: `groups/{id}`, `groups/{id}/transitiveMembers` and
`users/{id}/managedDevices`, in the shapes of Microsoft Graph v1.0 (sources in docs/simulator.md):

- a group is `#microsoft.graph.group`; an unknown group or user is 404 `Request_ResourceNotFound`;
- `transitiveMembers` is the flat list of the group's members and its nested groups' members
  (nested groups themselves included, each object once), every object with its `@odata.type`
  (`#microsoft.graph.device` with `deviceId`, `#microsoft.graph.user`, `#microsoft.graph.group`),
  100 a page by default, `$top` up to 999, `@odata.nextLink` with a `$skiptoken`;
- a device object's `deviceId` is the managed device's `azureADDeviceId`; a user's managed devices
  are the Intune devices whose `userId` is the user.

Users are the fleet's users (`userId`, `userPrincipalName` of its devices) plus any added ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

DEVICE = "#microsoft.graph.device"
USER = "#microsoft.graph.user"
GROUP = "#microsoft.graph.group"
_OBJECT_NAMESPACE = uuid.UUID("6f1d3c2b-8a4e-4f5d-9c6b-7e8f9a0b1c2d")

# A seeded group for the local stack (docs/simulator.md#groups): device members, a device without a
# managed device, a user whose device is also a direct member, and a nested group.
STORE_GROUP_ID = "4f6c8a2e-1b3d-4e5f-8a9b-0c1d2e3f4a5b"
NESTED_GROUP_ID = "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
ORPHAN_DEVICE_ID = "7f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
SEEDED_GROUPS: list[dict[str, Any]] = [
    {
        "id": NESTED_GROUP_ID,
        "displayName": "Store 042 managers",
        "members": [
            {"@odata.type": DEVICE, "deviceId": "5d8e6ddf-db87-4ed9-8381-97f0344e7650"},  # Alex's iPhone
            {"@odata.type": USER, "id": "8a1e6f91-0951-4549-a823-213cb38eb51c"},
        ],
    },
    {
        "id": STORE_GROUP_ID,
        "displayName": "Store 042 devices",
        "members": [
            {"@odata.type": DEVICE, "deviceId": "c23200a4-e69b-4e79-a004-861c7e82afc1"},  # Adele's Pixel
            {"@odata.type": DEVICE, "deviceId": "168b6b65-6d11-489d-a3f9-a9af2041f40a"},  # also a user's device
            {"@odata.type": DEVICE, "deviceId": ORPHAN_DEVICE_ID},  # in Entra, not enrolled in Intune
            {"@odata.type": USER, "id": "8a1e6f91-0951-4549-a823-213cb38eb51c"},  # Pixel + Windows PC
            {"@odata.type": GROUP, "id": NESTED_GROUP_ID},
        ],
    },
]


class DirectoryError(ValueError):
    pass


@dataclass
class Directory:
    """Groups and extra users; the fleet's devices are passed in when members are read."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reset(self) -> None:
        self.groups.clear()
        self.users.clear()
        for group in SEEDED_GROUPS:
            self.add_group(group)

    def add_group(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("members", []), list):
            raise DirectoryError("a group is an object with a members list")
        group_id = str(data.get("id") or uuid.uuid4())
        members = []
        for member in data.get("members", []):
            if not isinstance(member, dict) or member.get("@odata.type") not in (DEVICE, USER, GROUP):
                raise DirectoryError(f"each member needs @odata.type {DEVICE}, {USER} or {GROUP}")
            if member["@odata.type"] == DEVICE and not isinstance(member.get("deviceId"), str):
                raise DirectoryError("a device member needs its deviceId")
            if member["@odata.type"] != DEVICE and not isinstance(member.get("id"), str):
                raise DirectoryError("a user or group member needs its id")
            members.append(dict(member))
        group = {"id": group_id, "displayName": str(data.get("displayName") or group_id), "members": members}
        self.groups[group_id.lower()] = group
        return group

    def group(self, group_id: str) -> dict[str, Any] | None:
        return self.groups.get(group_id.lower())

    def transitive_members(self, group_id: str, devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Every member object once, nested groups' members included, in breadth-first order."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        queue = [group_id.lower()]
        visited: set[str] = set()
        while queue:
            current = self.groups.get(queue.pop(0))
            if current is None or current["id"].lower() in visited:
                continue
            visited.add(current["id"].lower())
            for member in current["members"]:
                rendered = self._render_member(member, devices)
                if rendered["id"].lower() in seen:
                    continue
                seen.add(rendered["id"].lower())
                out.append(rendered)
                if member["@odata.type"] == GROUP:
                    queue.append(member["id"].lower())
        return out

    def _render_member(self, member: dict[str, Any], devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
        kind = member["@odata.type"]
        if kind == DEVICE:
            device_id = member["deviceId"]
            managed = next(
                (d for d in devices.values() if str(d.get("azureADDeviceId") or "").lower() == device_id.lower()), None
            )
            return {
                "@odata.type": DEVICE,
                "id": str(uuid.uuid5(_OBJECT_NAMESPACE, device_id.lower())),  # the Entra object id
                "deviceId": device_id,
                "displayName": (managed or {}).get("deviceName") or f"device-{device_id[:8]}",
                "operatingSystem": (managed or {}).get("operatingSystem"),
            }
        if kind == USER:
            user = self.user(member["id"], devices) or {"id": member["id"]}
            return {
                "@odata.type": USER,
                "id": user["id"],
                "displayName": user.get("displayName"),
                "userPrincipalName": user.get("userPrincipalName"),
            }
        group = self.groups.get(member["id"].lower()) or {"id": member["id"], "displayName": None}
        return {"@odata.type": GROUP, "id": group["id"], "displayName": group["displayName"]}

    def user(self, user_id: str, devices: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if user_id.lower() in self.users:
            return self.users[user_id.lower()]
        for device in devices.values():
            if str(device.get("userId") or "").lower() == user_id.lower():
                return {
                    "id": device["userId"],
                    "userPrincipalName": device.get("userPrincipalName"),
                    "displayName": device.get("userDisplayName"),
                }
        return None

    def user_devices(self, user_id: str, devices: dict[str, dict[str, Any]]) -> list[str]:
        return [i for i, d in devices.items() if str(d.get("userId") or "").lower() == user_id.lower()]


def select_member(member: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """`$select` on a directoryObject collection: the chosen properties, always with @odata.type."""
    if not select:
        return member
    return {"@odata.type": member["@odata.type"], **{name: member.get(name) for name in select}}
