"""What a trigger front end (queue listener, HTTP front end) needs from the host that runs it.

`DevHost` satisfies it; the front ends depend on this interface, not on `DevHost`, so the package
has no import cycle (import-linter's acyclic_siblings contract, `make lint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from devstack.host.bindings import OutParam
from devstack.host.indexing import FunctionDef
from devstack.host.invoker import Invoker
from devstack.host.options import HostOptions
from devstack.host.storage import QueueStore


class HostContext(Protocol):
    options: HostOptions
    store: QueueStore
    invoker: Invoker
    function_key: str
    http_in_flight: int
    shutdown_timeout: float
    lease_seconds: float
    min_polling_interval: float

    async def write_outputs(self, definition: FunctionDef, outs: Mapping[str, OutParam], result: Any) -> None: ...
