"""Entra group reads for group batches (docs/contract.md#batch-items): the `GroupDirectory` port.

The calls go through the Graph gateway's request adapter and HTTP transport, so they take slots of
the same Graph budget as device reads and actions, and a 429 pauses them all alike. Graph's
documented shapes (docs/simulator.md names the pages): `GET /groups/{id}` (404 for an unknown
group), `GET /groups/{id}/transitiveMembers` (directory objects with `@odata.type`, paged by
`@odata.nextLink`, at most 999 a page), `GET /users/{id}/managedDevices`.

Without Device.Read.All, Graph returns device members "with limited information" (only
`@odata.type` and `id`): their `deviceId` is null and they cannot become items; they are logged
(docs/decisions/0019-group-batches-and-permissions.md).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from shared.adapters.graph import MsGraphIntuneGateway
from shared.core.batches import GroupMember, UserDevice
from shared.core.errors import GraphPermanentError

log = logging.getLogger("passcode_reset")

MEMBERS_PAGE_SIZE = 999  # Graph's maximum for transitiveMembers
MAX_PAGES = 1000


class GraphGroupDirectory:
    def __init__(self, gateway: MsGraphIntuneGateway) -> None:
        self._gateway = gateway

    async def group_exists(self, group_id: str) -> bool:
        try:
            await self._gateway.read_json(f"/v1.0/groups/{quote(group_id, safe='')}?$select=id")
        except GraphPermanentError as exc:
            if exc.status in (400, 404):
                return False
            raise
        return True

    async def transitive_members(self, group_id: str) -> list[GroupMember]:
        path = f"/v1.0/groups/{quote(group_id, safe='')}/transitiveMembers?$select=id,deviceId&$top={MEMBERS_PAGE_SIZE}"
        members: list[GroupMember] = []
        limited = 0
        for item in await self._pages(path):
            odata_type = str(item.get("@odata.type") or "")
            member_id = str(item.get("id") or "")
            device_id = item.get("deviceId") if isinstance(item.get("deviceId"), str) else None
            if odata_type.lower().endswith(".device") and not device_id:
                limited += 1
            members.append(GroupMember(odata_type=odata_type, id=member_id, device_id=device_id))
        if limited:
            log.warning(
                "group device members without deviceId (Device.Read.All missing?) are not items",
                extra={"event": "batch_group_limited_members", "count": limited},
            )
        return members

    async def user_managed_devices(self, user_id: str) -> list[UserDevice]:
        path = f"/v1.0/users/{quote(user_id, safe='')}/managedDevices?$select=id,azureADDeviceId"
        return [
            UserDevice(id=str(item["id"]), azure_ad_device_id=item.get("azureADDeviceId") or None)
            for item in await self._pages(path)
            if isinstance(item.get("id"), str)
        ]

    async def _pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        url: str | None = path
        pages = 0
        while url and pages < MAX_PAGES:
            pages += 1
            doc = await self._gateway.read_json(url)
            items.extend(item for item in doc.get("value") or [] if isinstance(item, dict))
            next_link = doc.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) else None
        return items
