"""The health probe (`HealthProbe` port) over the app's storage clients and Graph gateway."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import AzureError

from shared.core.errors import GraphError
from shared.ports import CheckState, IntuneGateway

# A device id no device has: reading it proves Graph is reachable and the identity may read devices.
_PROBE_DEVICE_ID = "00000000-0000-0000-0000-000000000000"


class RuntimeHealthProbe:
    """Cheap reads that prove each dependency answers; results are words, never error texts."""

    def __init__(self, table: Any, queue: Any, gateway: IntuneGateway) -> None:
        self._table = table
        self._queue = queue
        self._gateway = gateway

    async def storage(self) -> CheckState:
        try:
            async for _ in self._table.query_entities("PartitionKey eq '~health'", results_per_page=1):
                break
            await self._queue.get_queue_properties()
        except (AzureError, OSError):
            return "unreachable"
        return "ok"

    async def graph(self) -> CheckState:
        try:
            await self._gateway.get_device(_PROBE_DEVICE_ID)
        except GraphError as exc:
            return graph_check_state(exc.status)
        return "ok"


def graph_check_state(status: int | None) -> CheckState:
    """Any HTTP answer means Graph is reachable; 401/403 mean the identity is not allowed in."""
    if status is None:
        return "unreachable"
    if status in (401, 403):
        return "unauthorized"
    if status >= 500:
        return "unavailable"
    return "ok"
