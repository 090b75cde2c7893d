"""Async client of the simulator's control API (/_sim/...), for tests and the local demo.

control = SimulatorControl("http://127.0.0.1:8950")
await control.add_fault("504_after_apply", action="resetPasscode", device_id=device_id)
calls = await control.calls(method="POST", action="resetPasscode")
await control.aclose()
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from .state import UNSET, Unset


class SimulatorControlError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"simulator control API answered {status}: {message}")
        self.status = status
        self.message = message


class SimulatorControl:
    """Each method maps to one control route; see docs/simulator.md."""

    def __init__(self, base_url: str, *, session: aiohttp.ClientSession | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> SimulatorControl:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        async with self._client().request(method, f"{self.base_url}/_sim{path}", **kwargs) as response:
            text = await response.text()
            if response.status >= 400:
                raise SimulatorControlError(response.status, text)
            if response.status == 204 or not text:
                return None
            return await response.json(content_type=None)

    # -- lifecycle / config --------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def reset(self) -> None:
        """Seeded fleet, start-up config, no faults/results/scripts, empty call log and budget."""
        await self._call("POST", "/reset")

    async def get_config(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/config")
        return result

    async def configure(
        self,
        *,
        complete_after: float | Unset | None = UNSET,
        latency_ms: float | Unset = UNSET,
        throttle: dict[str, Any] | None = None,
        seed: int | Unset = UNSET,
        page_size: int | Unset = UNSET,
        behaviour: dict[str, Any] | None = None,
        startswith: str | None = None,
        unknown_enum_members: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """Change settings at runtime. `complete_after=None` means actions never complete on
        their own. `throttle` keys: enabled, postLimit, anyLimit, windowSeconds, retryAfter.
        `behaviour` (resultType, actionNameCase, unsupportedAction) is the default for devices
        without their own; `startswith`: ignore | prefix | contains; `unknown_enum_members`:
        property -> beta members to treat as newer than `unknownFutureValue`."""
        body: dict[str, Any] = {}
        if not isinstance(complete_after, Unset):
            body["completeAfter"] = complete_after
        if not isinstance(latency_ms, Unset):
            body["latencyMs"] = latency_ms
        if throttle is not None:
            body["throttle"] = throttle
        if not isinstance(seed, Unset):
            body["seed"] = seed
        if not isinstance(page_size, Unset):
            body["pageSize"] = page_size
        if behaviour is not None:
            body["behaviour"] = behaviour
        if startswith is not None:
            body["startswith"] = startswith
        if unknown_enum_members is not None:
            body["unknownEnumMembers"] = unknown_enum_members
        result: dict[str, Any] = await self._call("PUT", "/config", body)
        return result

    async def set_throttle(
        self,
        *,
        enabled: bool = True,
        post_limit: int | None = None,
        any_limit: int | None = None,
        window_seconds: float | None = None,
        retry_after: bool | None = None,
    ) -> dict[str, Any]:
        """`retry_after=False`: the budget's 429s carry no Retry-After header."""
        throttle: dict[str, Any] = {"enabled": enabled}
        if retry_after is not None:
            throttle["retryAfter"] = retry_after
        if post_limit is not None:
            throttle["postLimit"] = post_limit
        if any_limit is not None:
            throttle["anyLimit"] = any_limit
        if window_seconds is not None:
            throttle["windowSeconds"] = window_seconds
        return await self.configure(throttle=throttle)

    async def throttle_usage(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/throttle")
        return result

    # -- faults --------------------------------------------------------------------------------

    async def add_faults(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append raw fault rules (the JSON shape of docs/simulator.md); returns them with ids."""
        result: list[dict[str, Any]] = await self._call("POST", "/faults", rules)
        return result

    async def add_fault(
        self,
        fault: str,
        *,
        method: str | None = None,
        action: str | None = None,
        device_id: str | None = None,
        route: str | None = None,
        times: int | None = 1,
        probability: float = 1.0,
        retry_after: float | None = None,
        latency_ms: float = 0,
        body: str = "graph",
    ) -> dict[str, Any]:
        """One rule. fault: latency | 429 | 500 | 502 | 503 | 504 | 500_after_apply |
        502_after_apply | 504_after_apply | drop | drop_after_apply. `times=None` fires forever;
        `body` (graph | empty | html) shapes the error bodies; `retry_after` adds Retry-After to
        429/503 (a 429 without it has none)."""
        rule = {
            "match": {"method": method, "action": action, "deviceId": device_id, "route": route},
            "fault": fault,
            "times": times,
            "probability": probability,
            "retryAfter": retry_after,
            "latencyMs": latency_ms,
            "body": body,
        }
        return (await self.add_faults([rule]))[0]

    async def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/faults")
        return result

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/faults")

    # -- observations --------------------------------------------------------------------------

    async def calls(
        self,
        *,
        method: str | None = None,
        device_id: str | None = None,
        action: str | None = None,
        route: str | None = None,
        version: str | None = None,
    ) -> list[dict[str, Any]]:
        """The Graph call log, optionally filtered (case-insensitive equality)."""
        params = {
            k: v
            for k, v in {
                "method": method,
                "deviceId": device_id,
                "action": action,
                "route": route,
                "version": version,
            }.items()
            if v is not None
        }
        result: list[dict[str, Any]] = await self._call("GET", "/calls", params=params)
        return result

    async def clear_calls(self) -> None:
        await self._call("DELETE", "/calls")

    async def actions(self) -> dict[str, list[dict[str, Any]]]:
        """Applied action POSTs per device id: [{"action", "time", "requestId", "clientRequestId"}]."""
        result: dict[str, list[dict[str, Any]]] = await self._call("GET", "/actions")
        return result

    async def applied_count(self, device_id: str, action: str | None = None) -> int:
        entries = (await self.actions()).get(device_id, [])
        return sum(1 for e in entries if action is None or e["action"] == action)

    # -- devices -------------------------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/devices")
        return result

    async def device(self, device_id: str) -> dict[str, Any]:
        """Raw beta view with live deviceActionResults (and `_script` when scripted)."""
        result: dict[str, Any] = await self._call("GET", f"/devices/{device_id}")
        return result

    async def add_device(self, properties: dict[str, Any]) -> dict[str, Any]:
        """Add a managedDevice (beta property names; `id` generated when absent)."""
        result: dict[str, Any] = await self._call("POST", "/devices", properties)
        return result

    async def update_device(self, device_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("PATCH", f"/devices/{device_id}", properties)
        return result

    async def remove_device(self, device_id: str) -> None:
        await self._call("DELETE", f"/devices/{device_id}")

    async def script_device(
        self, device_id: str, *, complete_after: float | Unset | None = UNSET, final_state: str = "done"
    ) -> dict[str, Any]:
        """How the device's next actions end: after `complete_after` s (None = never, UNSET =
        global setting) in `final_state` (done | failed | canceled | notSupported)."""
        body: dict[str, Any] = {"finalState": final_state}
        if not isinstance(complete_after, Unset):
            body["completeAfter"] = complete_after
        result: dict[str, Any] = await self._call("PUT", f"/devices/{device_id}", body)
        return result

    async def set_behaviour(
        self,
        device_id: str,
        *,
        result_type: str = "prefixed",
        action_name_case: str = "camel",
        unsupported_action: str = "badRequest",
    ) -> dict[str, Any]:
        """How Intune presents the device from now on (replaces its behaviour; applies to its
        existing results too). result_type: prefixed (`#microsoft.graph.x`) | bare
        (`microsoft.graph.x`) | absent; action_name_case: camel | pascal | lower;
        unsupported_action: badRequest (400) | notSupportedLater (204, then `notSupported`)."""
        body = {
            "resultType": result_type,
            "actionNameCase": action_name_case,
            "unsupportedAction": unsupported_action,
        }
        result: dict[str, Any] = await self._call("PUT", f"/devices/{device_id}/behaviour", body)
        return result

    async def behaviour(self, device_id: str) -> dict[str, Any]:
        """The device's effective behaviour (its own, else the global default)."""
        result: dict[str, Any] = await self._call("GET", f"/devices/{device_id}/behaviour")
        return result

    async def clear_behaviour(self, device_id: str) -> None:
        """The device falls back to the global default behaviour."""
        await self._call("DELETE", f"/devices/{device_id}/behaviour")

    async def complete(self, device_id: str, state: str = "done", action: str | None = None) -> dict[str, Any]:
        """Finish the device's latest action (or `action`) now; returns the action result."""
        body: dict[str, Any] = {"state": state}
        if action is not None:
            body["action"] = action
        result: dict[str, Any] = await self._call("POST", f"/devices/{device_id}/complete", body)
        return result
