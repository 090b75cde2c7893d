"""`GET /api/health`: one word per dependency, 200 when all are ok, else 503
(docs/contract.md#health). No names, hosts or error texts in the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.api.http import HttpAnswer, json_answer
from shared.api.models import HealthChecks, HealthReport
from shared.api.services import ApiServices
from shared.ports import CheckState

log = logging.getLogger("passcode_reset")
HEALTH_TIMEOUT_SECONDS = 5.0


async def check_health(load: Callable[[], Awaitable[ApiServices]]) -> HttpAnswer:
    """200 healthy or 503 degraded, with one word per dependency; no names, hosts or error texts."""
    try:
        services = await asyncio.wait_for(load(), HEALTH_TIMEOUT_SECONDS * 2)
    except Exception as exc:  # the runtime could not even be built: storage is the first suspect
        log.warning("health: runtime unavailable", extra={"errorType": type(exc).__name__})
        checks = HealthChecks(storage="unreachable", graph="unreachable")
    else:
        storage, graph = await asyncio.gather(_bounded(services.health.storage()), _bounded(services.health.graph()))
        checks = HealthChecks(storage=storage, graph=graph)
    healthy = checks.storage == "ok" and checks.graph == "ok"
    report = HealthReport(status="healthy" if healthy else "degraded", checks=checks)
    return json_answer(200 if healthy else 503, report.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


async def _bounded(check: Awaitable[CheckState]) -> CheckState:
    try:
        return await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
    except TimeoutError:
        return "unreachable"
