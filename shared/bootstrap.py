"""The composition root: settings parsed once, real adapters built from them once per process.

The only module besides the adapters that knows which adapter implements which port.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.api.services import ApiServices
from shared.core.approvals import RULE_BATCH
from shared.core.batches import Pacing
from shared.core.clock import utcnow
from shared.core.lifecycle import Policy
from shared.ports import EventPublisher, Guardrails
from shared.settings import POISON_SUFFIX, Settings, load_settings
from shared.workflow.batches import BatchServices
from shared.workflow.eventgrid import EventGridServices
from shared.workflow.services import NoGuardrails, Services

if TYPE_CHECKING:
    # The adapters (and the SDKs behind them: azure-core, Tables, Blob, msgraph, kiota) are imported
    # when the first invocation builds the runtime, not with function_app: start-up stays short.
    from shared.adapters.eventgrid import EventGridTopicClient
    from shared.adapters.graph import MsGraphIntuneGateway
    from shared.adapters.graph_budget import BudgetLimits, CallBudget, GraphBudget
    from shared.adapters.ledger import TableLedger
    from shared.adapters.shared_budget import SharedGraphBudget
    from shared.adapters.storage import StorageClients, StorageQueue

log = logging.getLogger("passcode_reset")


@dataclass
class Runtime:
    settings: Settings
    services: Services
    api: ApiServices
    storage: StorageClients
    gateway: MsGraphIntuneGateway
    eventgrid: EventGridServices
    eventgrid_topic: EventGridTopicClient | None = None
    batches: BatchServices | None = None  # None without a blob endpoint (docs/contract.md#batches)

    async def aclose(self) -> None:
        await self.gateway.aclose()
        if self.eventgrid_topic is not None:
            await self.eventgrid_topic.aclose()
        await self.storage.aclose()


def policy_from(settings: Settings) -> Policy:
    return Policy(
        cooldown_seconds=settings.cooldown_seconds,
        confirm_first_check_seconds=settings.confirm_first_check_seconds,
        confirm_timeout_seconds=settings.confirm_timeout_seconds,
        request_deadline_seconds=settings.request_deadline_seconds,
        approval_rules=settings.approval_rules,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        guardrail_max_actions_per_hour=settings.guardrail_max_actions_per_hour,
        guardrail_max_per_requester_per_hour=settings.guardrail_max_per_requester_per_hour,
        allowed_requesters=settings.allowed_requesters,
    )


def guardrails(settings: Settings, ledger_table: Any, policy: Policy) -> Guardrails:
    """Counted in the ledger table when a guardrail is on (docs/contract.md#guardrails)."""
    from shared.adapters.guardrails import TableGuardrails

    if settings.guardrail_max_actions_per_hour or settings.guardrail_max_per_requester_per_hour:
        return TableGuardrails(ledger_table, policy)
    return NoGuardrails()


def budget_limits(settings: Settings) -> BudgetLimits:
    from shared.adapters.graph_budget import BudgetLimits

    return BudgetLimits(
        actions=settings.graph_post_budget,
        requests=settings.graph_request_budget,
        window_seconds=settings.graph_budget_window_seconds,
    )


def graph_budget(settings: Settings) -> GraphBudget:
    """One instance's fallback share of the Graph budget, 1/GRAPH_BUDGET_INSTANCES, kept in process
    while the shared budget cannot be reached (docs/decisions/0013-shared-graph-budget.md)."""
    from shared.adapters.graph_budget import GraphBudget

    return GraphBudget(budget_limits(settings).share(settings.graph_budget_instances))


def shared_graph_budget(settings: Settings, ledger_table: Any) -> SharedGraphBudget:
    """The Graph budget of all instances together, kept in the ledger table
    (docs/contract.md#graph-budget, docs/decisions/0013-shared-graph-budget.md)."""
    from shared.adapters.shared_budget import SharedGraphBudget, TableBudgetStore

    return SharedGraphBudget(TableBudgetStore(ledger_table), budget_limits(settings), fallback=graph_budget(settings))


def build_gateway(settings: Settings, budget: CallBudget | None = None) -> MsGraphIntuneGateway:
    from shared.adapters.graph import MsGraphIntuneGateway

    # httpx logs every call's URL at INFO, and a Graph URL carries the request's identifier
    # ($filter=serialNumber eq '...'): request values are never logged (README, Operations).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    budget = budget or graph_budget(settings)
    if settings.graph_token:
        return MsGraphIntuneGateway.with_static_token(settings.graph_base_url, settings.graph_token, budget=budget)
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    return MsGraphIntuneGateway.with_credential(settings.graph_base_url, credential, budget=budget)


async def build_runtime(settings: Settings) -> Runtime:
    from shared.adapters.eventgrid import EventGridTopicClient, OutboxPublisher
    from shared.adapters.health import RuntimeHealthProbe
    from shared.adapters.ledger import TableLedger
    from shared.adapters.storage import QueueWorkScheduler, StorageClients, StorageQueue

    storage = StorageClients(settings)
    await storage.ensure(
        [
            settings.requests_queue,
            settings.results_queue,
            settings.followups_queue,
            settings.requests_queue + POISON_SUFFIX,
            settings.followups_queue + POISON_SUFFIX,
            settings.batches_queue,
            settings.batches_queue + POISON_SUFFIX,
            *(
                [settings.eventgrid_outbox_queue, settings.eventgrid_outbox_queue + POISON_SUFFIX]
                if settings.eventgrid_topic_endpoint
                else []
            ),
        ],
        [settings.ledger_table],
    )
    gateway = build_gateway(settings, shared_graph_budget(settings, storage.table(settings.ledger_table)))
    ledger = TableLedger(storage.table(settings.ledger_table))
    requests_queue = StorageQueue(storage.queue(settings.requests_queue), settings.requests_queue)
    policy = policy_from(settings)
    # Every event goes to the results queue and, with Event Grid on, to its outbox too
    # (docs/contract.md#event-grid-delivery): the one publisher of every use case.
    publisher: EventPublisher = StorageQueue(storage.queue(settings.results_queue), settings.results_queue)
    outbox = StorageQueue(storage.queue(settings.eventgrid_outbox_queue), settings.eventgrid_outbox_queue)
    topic = None
    if settings.eventgrid_topic_endpoint:
        publisher = OutboxPublisher(publisher, outbox)
        topic = EventGridTopicClient.from_settings(
            settings.eventgrid_topic_endpoint, settings.eventgrid_topic_key, settings.azure_client_id
        )
    eventgrid = EventGridServices(topic=topic, outbox=outbox, retry_seconds=settings.eventgrid_retry_seconds)
    services = Services(
        gateway=gateway,
        ledger=ledger,
        publisher=publisher,
        scheduler=QueueWorkScheduler(
            requests_queue, StorageQueue(storage.queue(settings.followups_queue), settings.followups_queue)
        ),
        clock=utcnow,
        policy=policy,
        guardrails=guardrails(settings, storage.table(settings.ledger_table), policy),
    )
    api = ApiServices(
        ledger=ledger,
        requests_queue=requests_queue,
        gateway=gateway,
        clock=utcnow,
        policy=policy,
        health=RuntimeHealthProbe(
            storage.table(settings.ledger_table), storage.queue(settings.requests_queue), gateway
        ),
        require_roles=settings.auth_require_roles,
        allow_passcode_reveal=settings.allow_passcode_reveal,
        workflow=services,
    )
    batches = await build_batches(settings, storage, gateway, ledger, requests_queue, publisher, services)
    log.info("runtime ready", extra={"settings": repr(settings)})
    return Runtime(
        batches=batches,
        settings=settings,
        services=services,
        api=api,
        storage=storage,
        gateway=gateway,
        eventgrid=eventgrid,
        eventgrid_topic=topic,
    )


async def build_batches(
    settings: Settings,
    storage: StorageClients,
    gateway: MsGraphIntuneGateway,
    ledger: TableLedger,
    requests_queue: StorageQueue,
    publisher: EventPublisher,
    services: Services,
) -> BatchServices | None:
    """The batch use cases' ports; their items are paced at the app's whole Graph action rate."""
    from shared.adapters.batch_store import BATCH_CONTAINER, BlobBatchStore, TableBatchItems
    from shared.adapters.graph_directory import GraphGroupDirectory
    from shared.adapters.storage import StorageQueue

    if storage.blobs is None:
        return None
    await storage.ensure_containers([BATCH_CONTAINER])
    return BatchServices(
        store=BlobBatchStore(storage.container(BATCH_CONTAINER)),
        items=TableBatchItems(storage.table(settings.ledger_table)),
        ledger=ledger,
        requests_queue=requests_queue,
        batches_queue=StorageQueue(storage.queue(settings.batches_queue), settings.batches_queue),
        directory=GraphGroupDirectory(gateway),
        publisher=publisher,
        clock=utcnow,
        pacing=Pacing(rate_per_second=settings.graph_post_budget / settings.graph_budget_window_seconds),
        approval_required=RULE_BATCH in settings.approval_rules,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        workflow=services,
    )


class LazyRuntime:
    """One Runtime per process and event loop, built on the first invocation from the settings
    parsed at start-up.

    Settings are validated at import by `validate_environment` (a clear start-up error naming the
    setting) and parsed again only when the environment changed (the devstack host restarted
    in-process with other settings); the clients are created lazily because they bind to the
    running event loop.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._settings: Settings | None = None
        self._env_key: int | None = None
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def settings(self) -> Settings:
        """The settings, parsed once per distinct environment."""
        key = hash(frozenset(self._env.items()))
        if self._settings is None or key != self._env_key:
            self._settings, self._env_key = load_settings(self._env), key
        return self._settings

    async def get(self) -> Runtime:
        loop = asyncio.get_running_loop()
        settings = self.settings()
        if self._runtime is not None and self._loop is loop:
            if self._runtime.settings is settings:
                return self._runtime
            await self._runtime.aclose()  # settings changed (a dev host restarted in-process)
            self._runtime = None
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
            self._runtime = None
        async with self._lock:
            if self._runtime is None:
                self._runtime = await build_runtime(settings)
            return self._runtime

    async def aclose(self) -> None:
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None


def validate_environment(env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings at start-up so a bad value fails the host with the setting's name."""
    return load_settings(os.environ if env is None else env)
