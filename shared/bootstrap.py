"""The composition root: real adapters built from settings, once per process, on first use."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.events import QueueEventPublisher
from shared.intune import MsGraphIntuneGateway
from shared.ledger import TableLedger, utcnow
from shared.ratelimit import BudgetLimits, GraphBudget
from shared.settings import POISON_SUFFIX, Settings, load_settings
from shared.storage import QueueWorkScheduler, StorageClients
from shared.workflow import Policy, Services

log = logging.getLogger("passcode_reset")


@dataclass
class Runtime:
    settings: Settings
    services: Services
    storage: StorageClients
    gateway: MsGraphIntuneGateway

    async def aclose(self) -> None:
        await self.gateway.aclose()
        await self.storage.aclose()


def policy_from(settings: Settings) -> Policy:
    return Policy(
        cooldown_seconds=settings.cooldown_seconds,
        confirm_first_check_seconds=settings.confirm_first_check_seconds,
        confirm_timeout_seconds=settings.confirm_timeout_seconds,
        request_deadline_seconds=settings.request_deadline_seconds,
    )


def graph_budget(settings: Settings) -> GraphBudget:
    """This process's share of Intune's Graph budget (docs/decisions/0007-graph-budget.md)."""
    limits = BudgetLimits(
        actions=settings.graph_post_budget,
        requests=settings.graph_request_budget,
        window_seconds=settings.graph_budget_window_seconds,
    )
    return GraphBudget(limits.share(settings.graph_budget_instances))


def build_gateway(settings: Settings) -> MsGraphIntuneGateway:
    # httpx logs every call's URL at INFO, and a Graph URL carries the request's identifier
    # ($filter=serialNumber eq '...'): request values are never logged (README, Operations).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    budget = graph_budget(settings)
    if settings.graph_token:
        return MsGraphIntuneGateway.with_static_token(settings.graph_base_url, settings.graph_token, budget=budget)
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    return MsGraphIntuneGateway.with_credential(settings.graph_base_url, credential, budget=budget)


async def build_runtime(env: Mapping[str, str]) -> Runtime:
    settings = load_settings(env)
    storage = StorageClients(settings)
    await storage.ensure(
        [
            settings.requests_queue,
            settings.results_queue,
            settings.followups_queue,
            settings.requests_queue + POISON_SUFFIX,
            settings.followups_queue + POISON_SUFFIX,
        ],
        [settings.ledger_table],
    )
    gateway = build_gateway(settings)
    services = Services(
        gateway=gateway,
        ledger=TableLedger(storage.table(settings.ledger_table)),
        publisher=QueueEventPublisher(storage.queue(settings.results_queue)),
        scheduler=QueueWorkScheduler(storage.queue(settings.requests_queue), storage.queue(settings.followups_queue)),
        clock=utcnow,
        policy=policy_from(settings),
    )
    log.info("runtime ready", extra={"settings": repr(settings)})
    return Runtime(settings=settings, services=services, storage=storage, gateway=gateway)


class LazyRuntime:
    """One Runtime per process and event loop, built on the first invocation.

    Settings are validated at import by `validate_environment` (a clear start-up error naming the
    setting); the clients are created lazily because they bind to the running event loop.
    """

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Runtime:
        loop = asyncio.get_running_loop()
        if self._runtime is not None and self._loop is loop:
            if self._runtime.settings == load_settings(os.environ):
                return self._runtime
            await self._runtime.aclose()  # settings changed (a dev host restarted in-process)
            self._runtime = None
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
            self._runtime = None
        async with self._lock:
            if self._runtime is None:
                self._runtime = await build_runtime(os.environ)
            return self._runtime

    async def aclose(self) -> None:
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None


def validate_environment(env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings at start-up so a bad value fails the host with the setting's name."""
    return load_settings(os.environ if env is None else env)
