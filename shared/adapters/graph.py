"""The Graph adapter: the `IntuneGateway` port (shared/ports.py) over msgraph-sdk, with the error
taxonomy of shared/core/errors.py. Which calls and why: docs/contract.md#graph-traffic-and-permissions.

Devices are read from Graph beta as raw JSON through the SDK's request adapter (auth, middleware,
error mapping) because the v1.0 models lack `deviceType` and silently turn the Android Enterprise
enrollment types into None; a device's action results (v1.0) too, because the typed parse costs
more CPU than the rest of a confirmation check (docs/decisions/0028-less-host-cpu-per-request.md).
Actions go through the typed v1.0 request builders. The SDK's own retry handler is switched off
for every call: a retried action POST after a 504 could reset a device twice, and throttled work
is deferred on the queue instead of holding a worker.

Every call takes a slot of the Graph budget (shared/adapters/shared_budget.py, all instances together) in the HTTP
transport (shared/adapters/graph_transport.py), and a 429 pauses the whole budget. msgraph-sdk, kiota-http
and httpx are imported when the first gateway is built, not with this module: an instance that
never calls Graph (the HTTP API's status routes) does not pay for them at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)

from shared.adapters.graph_budget import CallBudget, GraphBudget
from shared.adapters.retry_after import parse_retry_after
from shared.core.device import ActionResult, IntuneDevice, imei_lookup_forms
from shared.core.errors import (
    ActionOutcomeUnknown,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    TooManyCandidates,
    action_answer_kind,
)
from shared.core.platforms import Action

if TYPE_CHECKING:
    import httpx

DEVICE_FIELDS = (
    "id",
    "deviceName",
    "operatingSystem",
    "osVersion",
    "deviceType",
    "deviceEnrollmentType",
    "managementAgent",
    "managedDeviceOwnerType",
    "userPrincipalName",
    "serialNumber",
    "imei",
    "azureADDeviceId",
)
# Graph property used in $filter for each request identifier kind (docs/contract.md#device-resolution).
FILTER_PROPERTY = {"serialNumber": "serialNumber", "imei": "imei", "azureAdDeviceId": "azureADDeviceId"}
PAGE_SIZE = 100
MAX_PAGES = 10
TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}  # on reads; action POSTs: core.errors.action_answer_kind
# Beta enum members newer than Graph's `unknownFutureValue` sentinel come by name only when asked
# (docs/contract.md#classification): a new enrollment type must be seen, not hidden.
PREFER_UNKNOWN_ENUM_MEMBERS = "include-unknown-enum-members"


class StaticTokenProvider(AccessTokenProvider):
    """GRAPH_TOKEN for a loopback Graph simulator (settings refuse it for anything else)."""

    def __init__(self, token: str, host: str) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


class MsGraphIntuneGateway:
    def __init__(
        self,
        base_url: str,
        auth_provider: AuthenticationProvider,
        *,
        timeout_s: float = 30.0,
        budget: CallBudget | None = None,
    ) -> None:
        import httpx
        from kiota_http.middleware.options import RetryHandlerOption
        from msgraph import GraphServiceClient
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph_core import GraphClientFactory

        from shared.adapters.graph_transport import BudgetTransport, GraphDependencyTransport, environment_proxy

        self._base = base_url.rstrip("/")
        self.budget: CallBudget = budget or GraphBudget()
        http_client = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
                # The budget's slot first, then each Graph call on the wire a dependency span.
                transport=BudgetTransport(
                    self.budget,
                    GraphDependencyTransport(httpx.AsyncHTTPTransport(proxy=environment_proxy(self._base))),
                ),
            ),
            options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0)},
        )
        self._http: httpx.AsyncClient = http_client
        self._adapter = GraphRequestAdapter(auth_provider, client=http_client)
        self._adapter.base_url = f"{self._base}/v1.0"
        self._client = GraphServiceClient(request_adapter=self._adapter)

    @classmethod
    def with_static_token(cls, base_url: str, token: str, *, budget: CallBudget | None = None) -> MsGraphIntuneGateway:
        host = urlsplit(base_url).hostname or ""
        return cls(base_url, BaseBearerTokenAuthenticationProvider(StaticTokenProvider(token, host)), budget=budget)

    @classmethod
    def with_credential(
        cls, base_url: str, credential: Any, *, budget: CallBudget | None = None
    ) -> MsGraphIntuneGateway:
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )

        host = urlsplit(base_url).hostname or ""
        provider = AzureIdentityAuthenticationProvider(
            credential, scopes=[f"{base_url.rstrip('/')}/.default"], allowed_hosts=[host]
        )
        return cls(base_url, provider, budget=budget)

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----------------------------------------------------------------- reads (beta, raw JSON)

    async def get_device(self, device_id: str) -> IntuneDevice | None:
        """The device, or None when Graph has no such id. Starts a reset: see `check_action_room`."""
        self.budget.check_action_room()
        try:
            doc = await self._get_json(self._device_url("beta", device_id, DEVICE_FIELDS))
        except GraphPermanentError as exc:
            if exc.status == 404:
                return None
            raise
        return IntuneDevice.from_graph(doc)

    async def find_devices(self, kind: str, value: str) -> list[IntuneDevice]:
        """Devices whose `kind` identifier equals `value`, verified client-side. An IMEI is asked
        for in each form it may be stored in until one finds a verified match (`$filter` eq is exact
        string equality): docs/decisions/0010-imei-lookup.md."""
        self.budget.check_action_room()
        forms = imei_lookup_forms(value) if kind == "imei" else [value]
        for form in forms:
            matches = await self._find_by(kind, FILTER_PROPERTY[kind], form, value)
            if matches:
                return matches
        return []

    async def _find_by(self, kind: str, prop: str, form: str, value: str) -> list[IntuneDevice]:
        literal = form.replace("'", "''")  # OData string literal: a quote is doubled
        expression = f"{prop} eq '{literal}'"
        url: str | None = (
            f"{self._base}/beta/deviceManagement/managedDevices"
            f"?$filter={quote(expression, safe='')}&$select={','.join(DEVICE_FIELDS)}&$top={PAGE_SIZE}"
        )
        matches: list[IntuneDevice] = []
        pages = 0
        while url:
            pages += 1
            if pages > MAX_PAGES:
                raise TooManyCandidates(
                    f"Graph returned more than {MAX_PAGES * PAGE_SIZE} candidates for a {kind} filter"
                )
            doc = await self._get_json(url)
            for item in doc.get("value") or []:
                if isinstance(item, dict):
                    device = IntuneDevice.from_graph(item)
                    if device.matches(kind, value):
                        matches.append(device)
            next_link = doc.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) and self._same_origin(next_link) else None
        return matches

    async def action_results(self, device_id: str) -> list[ActionResult]:
        """The device's deviceActionResults (only a single-device GET returns them), as raw JSON
        like the device reads: msgraph-sdk's typed `ManagedDevice` parse costs the host more CPU
        than the rest of a confirmation check (docs/decisions/0028-less-host-cpu-per-request.md)."""
        doc = await self._get_json(self._device_url("v1.0", device_id, ("deviceActionResults",)))
        entries = doc.get("deviceActionResults")
        if not isinstance(entries, list):
            return []
        return [ActionResult.from_graph(entry) for entry in entries if isinstance(entry, dict)]

    # ----------------------------------------------------------------- actions (v1.0, typed)

    async def perform(self, device_id: str, action: Action) -> None:
        builder = self._client.device_management.managed_devices.by_managed_device_id(device_id)
        if action.graph_name == "remoteLock":
            await self._call(builder.remote_lock.post, is_action=True)
        else:
            await self._call(builder.reset_passcode.post, is_action=True)

    # ----------------------------------------------------------------- plumbing

    async def read_json(self, path_or_url: str) -> dict[str, Any]:
        """A Graph GET (a path after the Graph root, or an `@odata.nextLink` of this Graph) as JSON,
        through this gateway's budget and error mapping (shared/adapters/graph_directory.py)."""
        url = path_or_url if "://" in path_or_url else self._base + path_or_url
        if not self._same_origin(url):
            raise GraphPermanentError("refusing a Graph link to another host")
        return await self._get_json(url)

    async def _get_json(self, url: str) -> dict[str, Any]:
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        info = RequestInformation(Method.GET)
        info.url = url
        info.headers.try_add("Accept", "application/json")
        info.headers.try_add("Prefer", PREFER_UNKNOWN_ENUM_MEMBERS)
        raw = await self._call(
            lambda: self._adapter.send_primitive_async(info, "bytes", {"XXX": ODataError}), is_action=False
        )
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise GraphTransientError("Graph answered with a body that is not JSON") from exc
        if not isinstance(doc, dict):
            raise GraphTransientError("Graph answered with unexpected JSON")
        return doc

    async def _call(self, send: Callable[[], Awaitable[Any]], *, is_action: bool) -> Any:
        """One Graph call mapped to the error taxonomy. The transport takes the budget's slot
        (GraphBudgetExhausted, a transient error, when there is none within the wait bound)."""
        import httpx

        try:
            return await send()
        except APIError as exc:
            raise _map_api_error(exc, is_action=is_action) from None
        except httpx.ConnectError as exc:  # nothing was sent: safe to retry even for an action
            raise GraphTransientError(f"cannot connect to Graph: {type(exc).__name__}") from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            kind = ActionOutcomeUnknown if is_action else GraphTransientError
            raise kind(f"Graph call interrupted: {type(exc).__name__}") from None

    def _device_url(self, version: str, device_id: str, fields: tuple[str, ...]) -> str:
        """One managed device of Graph `version` (beta, v1.0), with only `fields`."""
        return (
            f"{self._base}/{version}/deviceManagement/managedDevices/{quote(device_id, safe='')}"
            f"?$select={','.join(fields)}"
        )

    def _same_origin(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self._base).netloc


def _map_api_error(exc: APIError, *, is_action: bool) -> GraphError:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    status = exc.response_status_code
    code = None
    request_id = None
    if isinstance(exc, ODataError) and exc.error is not None:
        code = exc.error.code
        if exc.error.inner_error is not None:
            request_id = exc.error.inner_error.request_id
    headers = {k.lower(): v for k, v in (exc.response_headers or {}).items()}
    retry_after = parse_retry_after(headers.get("retry-after"))
    detail = (
        f"Graph answered {status}"
        + (f" {code}" if code else "")
        + (f" (request-id {request_id})" if request_id else "")
    )
    if is_action:
        # Only 400/401/403/404 (refused) and 429 (throttled) prove the action was not taken; a 503
        # with Retry-After too may follow a queued action (docs/decisions/0011-unknown-action-outcomes.md).
        kind = action_answer_kind(status) if status is not None else "unknown"
        if kind == "unknown":
            return ActionOutcomeUnknown(detail, status=status, code=code, retry_after=retry_after)
        if kind == "not_taken":
            return GraphTransientError(detail, status=status, code=code, retry_after=retry_after)
        return GraphPermanentError(detail, status=status, code=code)
    if status in TRANSIENT_STATUSES:
        return GraphTransientError(detail, status=status, code=code, retry_after=retry_after)
    return GraphPermanentError(detail, status=status, code=code)
