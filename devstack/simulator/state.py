"""Simulator state: configuration, fleet, device action results, throttling budget, fault rules
and the call log. Pure Python, no I/O except reading the fleet file; server.py puts HTTP on top."""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from . import platforms, schema
from .directory import Directory

DEFAULT_TOKEN: Final = "devstack-local-token"
DEFAULT_SEED: Final = 20261125
DEFAULT_FLEET: Final = Path(__file__).with_name("fleet.json")

UNLOCK_PIN_DAYS: Final = 30  # Intune shows a macOS remote lock PIN for 30 days or until the next action
ACTION_STATES: Final = ("none", "pending", "canceled", "active", "done", "failed", "notSupported")
FINAL_STATES: Final = frozenset({"done", "failed", "canceled", "notSupported"})
FAULT_KINDS: Final = frozenset(
    {
        "latency",
        "429",
        "500",
        "500_after_apply",
        "502",
        "502_after_apply",
        "503",
        "504",
        "504_after_apply",
        "drop",
        "drop_after_apply",
    }
)
ROUTES: Final = frozenset({"device", "list", "action"})
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAULT_BODIES: Final = frozenset({"graph", "empty", "html"})
# How `deviceActionResults` entries name their type: "#microsoft.graph.x" (what Graph sends),
# "microsoft.graph.x" (how Microsoft's Intune samples write nested types) or no @odata.type.
RESULT_TYPE_FORMS: Final = ("prefixed", "bare", "absent")
ACTION_NAME_CASES: Final = ("camel", "pascal", "lower")  # resetPasscode, ResetPasscode, resetpasscode
UNSUPPORTED_ACTION_MODES: Final = ("badRequest", "notSupportedLater")
STARTSWITH_MODES: Final = ("ignore", "prefix", "contains")


class Unset:
    """Marker for "not given" where None is a meaningful value (None = never complete)."""

    _instance: Unset | None = None

    def __new__(cls) -> Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = Unset()


class SimulatorError(ValueError):
    """Invalid input to the control API (answered with 400) or unknown object (404/409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def iso(ts: float) -> str:
    """Graph's timestamp format: 7 fractional digits and Z."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def parse_iso(value: str) -> float:
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _number(value: Any, name: str, *, minimum: float = 0.0, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SimulatorError(f"{name} must be a number")
    if value < minimum:
        raise SimulatorError(f"{name} must be >= {minimum:g}")
    return float(value)


def _int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SimulatorError(f"{name} must be an integer >= {minimum}")
    return value


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class ThrottleConfig:
    """Intune's budget per app and tenant: 200 writes and 2,000 requests per sliding 20 s."""

    enabled: bool = True
    post_limit: int = 200
    any_limit: int = 2000
    window_seconds: float = 20.0
    retry_after: bool = True  # False: budget 429s carry no Retry-After (some Intune endpoints do that)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "postLimit": self.post_limit,
            "anyLimit": self.any_limit,
            "windowSeconds": self.window_seconds,
            "retryAfter": self.retry_after,
        }

    def updated(self, data: Any) -> ThrottleConfig:
        if not isinstance(data, dict):
            raise SimulatorError("throttle must be an object")
        unknown = set(data) - {"enabled", "postLimit", "anyLimit", "windowSeconds", "retryAfter"}
        if unknown:
            raise SimulatorError(f"unknown throttle settings: {sorted(unknown)}")
        result = dataclasses.replace(self)
        for key, attr in (("enabled", "enabled"), ("retryAfter", "retry_after")):
            if key in data:
                if not isinstance(data[key], bool):
                    raise SimulatorError(f"throttle.{key} must be a boolean")
                setattr(result, attr, data[key])
        if "postLimit" in data:
            result.post_limit = _int(data["postLimit"], "throttle.postLimit")
        if "anyLimit" in data:
            result.any_limit = _int(data["anyLimit"], "throttle.anyLimit")
        if "windowSeconds" in data:
            window = _number(data["windowSeconds"], "throttle.windowSeconds")
            if not window:
                raise SimulatorError("throttle.windowSeconds must be > 0")
            result.window_seconds = window
        return result


@dataclass
class DeviceBehaviour:
    """How Intune presents one device (docs/simulator.md, "Real-world behaviours"). The defaults are
    what the simulator always did; every other value is opt-in per device or as a global default."""

    result_type: str = "prefixed"  # RESULT_TYPE_FORMS
    action_name_case: str = "camel"  # ACTION_NAME_CASES
    unsupported_action: str = "badRequest"  # UNSUPPORTED_ACTION_MODES

    def to_json(self) -> dict[str, Any]:
        return {
            "resultType": self.result_type,
            "actionNameCase": self.action_name_case,
            "unsupportedAction": self.unsupported_action,
        }

    def updated(self, data: Any) -> DeviceBehaviour:
        """A copy with the keys of `data` applied (absent keys keep their value)."""
        if not isinstance(data, dict):
            raise SimulatorError("behaviour must be an object")
        fields = {
            "resultType": ("result_type", RESULT_TYPE_FORMS),
            "actionNameCase": ("action_name_case", ACTION_NAME_CASES),
            "unsupportedAction": ("unsupported_action", UNSUPPORTED_ACTION_MODES),
        }
        unknown = set(data) - set(fields)
        if unknown:
            raise SimulatorError(f"unknown behaviour fields: {sorted(unknown)}")
        result = dataclasses.replace(self)
        for key, (attr, allowed) in fields.items():
            if key in data:
                if data[key] not in allowed:
                    raise SimulatorError(f"{key} must be one of {list(allowed)}")
                setattr(result, attr, data[key])
        return result

    def action_name(self, action: str) -> str:
        if self.action_name_case == "pascal":
            return action[:1].upper() + action[1:]
        if self.action_name_case == "lower":
            return action.lower()
        return action

    def odata_type(self, qualified_name: str) -> str | None:
        """`qualified_name` is "microsoft.graph.x"; None means: leave @odata.type out."""
        if self.result_type == "absent":
            return None
        return qualified_name if self.result_type == "bare" else f"#{qualified_name}"


def _unknown_enum_members(data: Any) -> dict[str, frozenset[str]]:
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in data.items()
    ):
        raise SimulatorError("unknownEnumMembers must map a property name to a list of enum member names")
    return {k: frozenset(v) for k, v in data.items()}


@dataclass
class SimulatorConfig:
    token: str = DEFAULT_TOKEN
    fleet_path: Path = DEFAULT_FLEET
    complete_after: float | None = 2.0  # seconds until an action result leaves `pending`; None = never
    latency_ms: float = 0.0  # added to every Graph call
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    seed: int = DEFAULT_SEED
    page_size: int = 25  # server-side page size of the list route
    behaviour: DeviceBehaviour = field(default_factory=DeviceBehaviour)  # for devices without their own
    startswith: str = "ignore"  # `startswith(<prop>,'x')` filters: ignore (every device) | prefix | contains
    # Beta enum members that sort after the `unknownFutureValue` sentinel (schema.UNKNOWN_ENUM_MEMBERS
    # plus these): served as `unknownFutureValue` unless `Prefer: include-unknown-enum-members`.
    unknown_enum_members: dict[str, frozenset[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "completeAfter": self.complete_after,
            "latencyMs": self.latency_ms,
            "throttle": self.throttle.to_json(),
            "seed": self.seed,
            "pageSize": self.page_size,
            "fleet": str(self.fleet_path),
            "behaviour": self.behaviour.to_json(),
            "startswith": self.startswith,
            "unknownEnumMembers": {k: sorted(v) for k, v in self.unknown_enum_members.items()},
        }


# --------------------------------------------------------------------------------------------
# device action results


@dataclass
class ActionRecord:
    """One entry of a device's `deviceActionResults` (one per action name, like Intune)."""

    action_name: str
    start: float
    complete_at: float | None
    final_state: str = "done"
    fixed_state: str | None = None  # set when seeded or completed on command
    updated: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def odata_type(self) -> str:
        """Qualified type name, without the leading '#'."""
        if self.action_name == platforms.RESET_PASSCODE:
            return "microsoft.graph.resetPasscodeActionResult"
        if self.action_name == platforms.REMOTE_LOCK:
            return "microsoft.graph.remoteLockActionResult"
        return "microsoft.graph.deviceActionResult"

    def state_at(self, now: float) -> tuple[str, float]:
        if self.fixed_state is not None:
            return self.fixed_state, self.updated if self.updated is not None else self.start
        if self.complete_at is not None and now >= self.complete_at:
            return self.final_state, self.complete_at
        return "pending", self.start

    def to_json(self, now: float, behaviour: DeviceBehaviour | None = None) -> dict[str, Any]:
        behaviour = behaviour or DeviceBehaviour()
        state, updated = self.state_at(now)
        body: dict[str, Any] = {}
        odata_type = behaviour.odata_type(self.odata_type)
        if odata_type is not None:
            body["@odata.type"] = odata_type
        body.update(
            {
                "actionName": behaviour.action_name(self.action_name),
                "actionState": state,
                "startDateTime": iso(self.start),
                "lastUpdatedDateTime": iso(updated),
            }
        )
        body.update(self.extra)
        return body

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionRecord:
        """A result seeded in the fleet file: its state is fixed."""
        try:
            name = str(data["actionName"])
            state = str(data.get("actionState", "done"))
            start = parse_iso(str(data["startDateTime"]))
            updated = parse_iso(str(data.get("lastUpdatedDateTime") or data["startDateTime"]))
        except (KeyError, ValueError) as exc:
            raise SimulatorError(f"invalid deviceActionResults entry: {exc}") from exc
        if state not in ACTION_STATES:
            raise SimulatorError(f"invalid actionState {state!r}")
        known = {"@odata.type", "actionName", "actionState", "startDateTime", "lastUpdatedDateTime"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(name, start, None, fixed_state=state, updated=updated, extra=extra)


@dataclass
class DeviceScript:
    """Per-device behaviour of new actions: delay (UNSET = global setting, None = never) and outcome."""

    complete_after: float | Unset | None = UNSET
    final_state: str = "done"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"finalState": self.final_state}
        if not isinstance(self.complete_after, Unset):
            body["completeAfter"] = self.complete_after
        return body


# --------------------------------------------------------------------------------------------
# faults


@dataclass
class FaultRule:
    id: int
    fault: str
    method: str | None = None
    action: str | None = None
    device_id: str | None = None
    route: str | None = None
    times: int | None = 1  # None = forever
    probability: float = 1.0
    retry_after: float | None = None
    latency_ms: float = 0.0
    body: str = "graph"
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    @property
    def terminal(self) -> bool:
        return self.fault != "latency"

    @property
    def applies_action(self) -> bool:
        return self.fault.endswith("_after_apply")

    def matches(self, method: str, route: str | None, device_id: str | None, action: str | None) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.route is not None and self.route != route:
            return False
        if self.action is not None and (action is None or self.action.lower() != action.lower()):
            return False
        return not (self.device_id is not None and (device_id or "").lower() != self.device_id.lower())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": {
                "method": self.method,
                "action": self.action,
                "deviceId": self.device_id,
                "route": self.route,
            },
            "fault": self.fault,
            "times": self.times,
            "probability": self.probability,
            "retryAfter": self.retry_after,
            "latencyMs": self.latency_ms,
            "body": self.body,
            "fired": self.fired,
        }

    @classmethod
    def from_json(cls, rule_id: int, data: Any) -> FaultRule:
        if not isinstance(data, dict):
            raise SimulatorError("a fault rule must be an object")
        unknown = set(data) - {"match", "fault", "times", "probability", "retryAfter", "latencyMs", "body"}
        if unknown:
            raise SimulatorError(f"unknown fault rule fields: {sorted(unknown)}")
        fault = data.get("fault")
        if isinstance(fault, int) and not isinstance(fault, bool):
            fault = str(fault)
        if fault not in FAULT_KINDS:
            raise SimulatorError(f"fault must be one of {sorted(FAULT_KINDS)}")
        match = data.get("match") or {}
        if not isinstance(match, dict):
            raise SimulatorError("match must be an object")
        unknown = set(match) - {"method", "action", "deviceId", "route"}
        if unknown:
            raise SimulatorError(f"unknown match fields: {sorted(unknown)}")
        for key in ("method", "action", "deviceId", "route"):
            if match.get(key) is not None and not isinstance(match[key], str):
                raise SimulatorError(f"match.{key} must be a string or null")
        route = match.get("route")
        if route is not None and route not in ROUTES:
            raise SimulatorError(f"match.route must be one of {sorted(ROUTES)} or null")
        times = data.get("times", 1)
        if times is not None:
            times = _int(times, "times")
        probability = _number(data.get("probability", 1.0), "probability")
        if probability is None or probability > 1:
            raise SimulatorError("probability must be between 0 and 1")
        retry_after = _number(data.get("retryAfter"), "retryAfter", allow_none=True)
        latency = _number(data.get("latencyMs") or 0, "latencyMs") or 0.0
        body = data.get("body", "graph")
        if body not in FAULT_BODIES:
            raise SimulatorError(f"body must be one of {sorted(FAULT_BODIES)}")
        method = match.get("method")
        return cls(
            id=rule_id,
            fault=fault,
            method=method.upper() if method else None,
            action=match.get("action"),
            device_id=match.get("deviceId"),
            route=route,
            times=times,
            probability=probability,
            retry_after=retry_after,
            latency_ms=latency,
            body=body,
        )


# --------------------------------------------------------------------------------------------
# throttling


class Throttle:
    """Sliding-window request budget. Only admitted requests count.

    It also watches the client: the most calls that *arrived* (admitted or refused, throttling on
    or off) in any window, so a test or benchmark can tell whether the app ever sent more than the
    budget in some window (`peakWrites` / `peakAny` of `GET /_sim/throttle`)."""

    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self._any: collections.deque[float] = collections.deque()
        self._writes: collections.deque[float] = collections.deque()
        self._arrived_any: collections.deque[float] = collections.deque()
        self._arrived_writes: collections.deque[float] = collections.deque()
        self.peak_any = 0
        self.peak_writes = 0

    def clear(self) -> None:
        self._any.clear()
        self._writes.clear()
        self._arrived_any.clear()
        self._arrived_writes.clear()
        self.peak_any = self.peak_writes = 0

    def _watch(self, write: bool, now: float) -> None:
        horizon = now - self.config.window_seconds
        for arrived in (self._arrived_any, self._arrived_writes):
            while arrived and arrived[0] <= horizon:
                arrived.popleft()
        self._arrived_any.append(now)
        self.peak_any = max(self.peak_any, len(self._arrived_any))
        if write:
            self._arrived_writes.append(now)
            self.peak_writes = max(self.peak_writes, len(self._arrived_writes))

    def _expire(self, now: float) -> None:
        horizon = now - self.config.window_seconds
        for window in (self._any, self._writes):
            while window and window[0] <= horizon:
                window.popleft()

    def admit(self, method: str, now: float | None = None) -> int | None:
        """None when admitted (and counted), else the Retry-After in whole seconds (>= 1)."""
        now = time.monotonic() if now is None else now
        write = method.upper() in WRITE_METHODS
        self._watch(write, now)
        if not self.config.enabled:
            return None
        self._expire(now)
        waits: list[float] = []
        if write and len(self._writes) >= self.config.post_limit:
            waits.append(self._writes[len(self._writes) - self.config.post_limit] - now)
        if len(self._any) >= self.config.any_limit:
            waits.append(self._any[len(self._any) - self.config.any_limit] - now)
        if waits:
            return max(1, math.ceil(max(waits) + self.config.window_seconds))
        self._any.append(now)
        if write:
            self._writes.append(now)
        return None

    def usage(self) -> dict[str, Any]:
        self._expire(time.monotonic())
        return {
            "any": len(self._any),
            "writes": len(self._writes),
            "peakAny": self.peak_any,
            "peakWrites": self.peak_writes,
            "exceeded": self.peak_any > self.config.any_limit or self.peak_writes > self.config.post_limit,
        }


# --------------------------------------------------------------------------------------------
# state


def load_fleet(path: Path) -> list[dict[str, Any]]:
    """Read a fleet file: a Graph list body `{"value": [...]}` or a bare JSON list of devices."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    devices = data.get("value") if isinstance(data, dict) else data
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise SimulatorError(f"{path}: expected a list of device objects (or {{'value': [...]}})")
    return devices


def load_behaviours(path: Path) -> dict[str, dict[str, Any]]:
    """The fleet file's optional top-level `behaviours` map: device id -> behaviour fields. Kept
    outside the device records so that code cloning fleet devices (bench/) never copies them."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    behaviours = data.get("behaviours", {}) if isinstance(data, dict) else {}
    if not isinstance(behaviours, dict) or not all(isinstance(v, dict) for v in behaviours.values()):
        raise SimulatorError(f"{path}: behaviours must map device ids to objects")
    return behaviours


class SimulatorState:
    """Everything the simulator knows. Mutated only from the event loop thread."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.initial_config = copy.deepcopy(config or SimulatorConfig())
        self.fleet_source = load_fleet(self.initial_config.fleet_path)
        self.fleet_behaviours = load_behaviours(self.initial_config.fleet_path)
        self.config = copy.deepcopy(self.initial_config)
        self.devices: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, ActionRecord]] = {}
        self.scripts: dict[str, DeviceScript] = {}
        self.behaviours: dict[str, DeviceBehaviour] = {}
        self.faults: list[FaultRule] = []
        self.calls: list[dict[str, Any]] = []
        self.applied: dict[str, list[dict[str, Any]]] = {}
        self.rng = random.Random(self.config.seed)
        self.throttle = Throttle(self.config.throttle)
        self._next_fault_id = 1
        self.directory = Directory()  # Entra groups and users (devstack/simulator/directory.py)
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the seeded fleet and the start-up configuration: no faults, no action results
        beyond the seeded ones, no throttle counters, empty call log."""
        self.config = copy.deepcopy(self.initial_config)
        self.rng = random.Random(self.config.seed)
        self.throttle = Throttle(self.config.throttle)
        self.faults.clear()
        self.calls.clear()
        self.applied.clear()
        self.scripts.clear()
        self.behaviours.clear()
        self.devices.clear()
        self.results.clear()
        for device in self.fleet_source:
            self.add_device(copy.deepcopy(device))
        self.directory.reset()
        for device_id, behaviour in self.fleet_behaviours.items():
            self.set_behaviour(device_id, behaviour)

    def configure(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise SimulatorError("config must be an object")
        unknown = set(data) - {
            "completeAfter",
            "latencyMs",
            "throttle",
            "seed",
            "pageSize",
            "behaviour",
            "startswith",
            "unknownEnumMembers",
        }
        if unknown:
            raise SimulatorError(f"unknown config fields: {sorted(unknown)}")
        config = copy.deepcopy(self.config)
        if "completeAfter" in data:
            config.complete_after = _number(data["completeAfter"], "completeAfter", allow_none=True)
        if "latencyMs" in data:
            config.latency_ms = _number(data["latencyMs"], "latencyMs") or 0.0
        if "throttle" in data:
            config.throttle = config.throttle.updated(data["throttle"])
        if "pageSize" in data:
            config.page_size = _int(data["pageSize"], "pageSize")
        if "behaviour" in data:
            config.behaviour = config.behaviour.updated(data["behaviour"])
        if "startswith" in data:
            if data["startswith"] not in STARTSWITH_MODES:
                raise SimulatorError(f"startswith must be one of {list(STARTSWITH_MODES)}")
            config.startswith = data["startswith"]
        if "unknownEnumMembers" in data:
            config.unknown_enum_members = _unknown_enum_members(data["unknownEnumMembers"])
        if "seed" in data:
            config.seed = _int(data["seed"], "seed", minimum=0)
            self.rng = random.Random(config.seed)
        if config.throttle != self.config.throttle:
            self.throttle.config = config.throttle
        self.config = config
        return config.to_json()

    # -- devices -----------------------------------------------------------------------------

    def add_device(self, props: Any) -> dict[str, Any]:
        if not isinstance(props, dict):
            raise SimulatorError("a device must be a JSON object")
        device: dict[str, Any] = dict(props)
        device.pop("@odata.type", None)
        known = set(schema.BETA_PROPERTIES)
        unknown = sorted(set(device) - known)
        if unknown:
            raise SimulatorError(f"not managedDevice properties: {unknown}")
        device_id = device.get("id") or str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if not isinstance(device_id, str):
            raise SimulatorError("id must be a string")
        if device_id.lower() in {d.lower() for d in self.devices}:
            raise SimulatorError(f"device {device_id} exists", status=409)
        device["id"] = device_id
        seeded = device.pop("deviceActionResults", None) or []
        if not isinstance(seeded, list):
            raise SimulatorError("deviceActionResults must be a list")
        records = {}
        for entry in seeded:
            if not isinstance(entry, dict):
                raise SimulatorError("deviceActionResults entries must be objects")
            record = ActionRecord.from_json(entry)
            records[record.action_name] = record
        self.devices[device_id] = device
        self.results[device_id] = records
        return device

    def find_device(self, device_id: str) -> str | None:
        """The stored id for `device_id` (GUIDs compare case-insensitively, like Graph)."""
        if device_id in self.devices:
            return device_id
        lowered = device_id.lower()
        for known in self.devices:
            if known.lower() == lowered:
                return known
        return None

    def require_device(self, device_id: str) -> str:
        found = self.find_device(device_id)
        if found is None:
            raise SimulatorError(f"no device {device_id}", status=404)
        return found

    def update_device(self, device_id: str, props: Any) -> dict[str, Any]:
        found = self.require_device(device_id)
        if not isinstance(props, dict):
            raise SimulatorError("properties must be a JSON object")
        unknown = sorted(set(props) - set(schema.BETA_PROPERTIES) - {"deviceActionResults"})
        if unknown or "id" in props:
            raise SimulatorError(f"cannot set {unknown or ['id']}")
        if "deviceActionResults" in props:
            entries = props.pop("deviceActionResults") or []
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise SimulatorError("deviceActionResults must be a list of objects")
            records = [ActionRecord.from_json(e) for e in entries]
            self.results[found] = {r.action_name: r for r in records}
        self.devices[found].update(props)
        return self.devices[found]

    def remove_device(self, device_id: str) -> None:
        found = self.require_device(device_id)
        del self.devices[found]
        self.results.pop(found, None)
        self.scripts.pop(found, None)
        self.behaviours.pop(found, None)

    def script_device(self, device_id: str, data: Any) -> DeviceScript:
        found = self.require_device(device_id)
        if not isinstance(data, dict):
            raise SimulatorError("script must be an object")
        unknown = set(data) - {"completeAfter", "finalState"}
        if unknown:
            raise SimulatorError(f"unknown script fields: {sorted(unknown)}")
        script = DeviceScript()
        if "completeAfter" in data:
            script.complete_after = _number(data["completeAfter"], "completeAfter", allow_none=True)
        final = data.get("finalState", "done")
        if final not in FINAL_STATES:
            raise SimulatorError(f"finalState must be one of {sorted(FINAL_STATES)}")
        script.final_state = final
        self.scripts[found] = script
        return script

    def set_behaviour(self, device_id: str, data: Any) -> DeviceBehaviour:
        """Replace the device's behaviour: given keys over the defaults (not the global default)."""
        found = self.require_device(device_id)
        behaviour = DeviceBehaviour().updated(data)
        self.behaviours[found] = behaviour
        return behaviour

    def clear_behaviour(self, device_id: str) -> None:
        self.behaviours.pop(self.require_device(device_id), None)

    def behaviour_of(self, device_id: str) -> DeviceBehaviour:
        return self.behaviours.get(device_id) or self.config.behaviour

    def device_view(self, device_id: str, now: float | None = None) -> dict[str, Any]:
        """Raw (beta, unfiltered) view of a device for the control API."""
        found = self.require_device(device_id)
        body = {**self.devices[found], "deviceActionResults": self.action_results(found, now)}
        if found in self.scripts:
            body["_script"] = self.scripts[found].to_json()
        if found in self.behaviours:
            body["_behaviour"] = self.behaviours[found].to_json()
        return body

    # -- actions -----------------------------------------------------------------------------

    def action_results(self, device_id: str, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        records = sorted(self.results.get(device_id, {}).values(), key=lambda r: r.start)
        behaviour = self.behaviour_of(device_id)
        bodies = [r.to_json(now, behaviour) for r in records]
        for index, body in enumerate(bodies):
            # The unlock PIN is gone after 30 days, or once a later action reached the device.
            expired = now - records[index].start > UNLOCK_PIN_DAYS * 86400 or index < len(records) - 1
            if body.get("unlockPin") is not None and expired:
                body["unlockPin"] = None
        return bodies

    def apply_action(
        self,
        device_id: str,
        action: str,
        *,
        request_id: str | None = None,
        client_request_id: str | None = None,
        not_supported: bool = False,
    ) -> ActionRecord:
        """Record an accepted action: the device's result for that action name is replaced.
        `not_supported`: Intune accepted an action the device cannot run; it ends `notSupported`
        (no passcode or PIN is generated)."""
        found = self.require_device(device_id)
        device = self.devices[found]
        now = time.time()
        script = self.scripts.get(found, DeviceScript())
        delay = self.config.complete_after if isinstance(script.complete_after, Unset) else script.complete_after
        extra: dict[str, Any] = {}
        if action == platforms.RESET_PASSCODE:
            extra["passcode"] = self._passcode() if platforms.is_android(device) and not not_supported else None
            extra["errorCode"] = 0
        elif action == platforms.REMOTE_LOCK:
            extra["unlockPin"] = self._digits(6) if platforms.is_macos(device) and not not_supported else None
        record = ActionRecord(
            action_name=action,
            start=now,
            complete_at=None if delay is None else now + delay,
            final_state="notSupported" if not_supported else script.final_state,
            extra=extra,
        )
        self.results.setdefault(found, {})[action] = record
        self.applied.setdefault(found, []).append(
            {"action": action, "time": iso(now), "requestId": request_id, "clientRequestId": client_request_id}
        )
        return record

    def complete(self, device_id: str, state: str = "done", action: str | None = None) -> dict[str, Any]:
        """Finish the device's latest action (or the named one) now with `state`."""
        found = self.require_device(device_id)
        if state not in ACTION_STATES:
            raise SimulatorError(f"state must be one of {list(ACTION_STATES)}")
        records = self.results.get(found, {})
        if action is not None:
            record = next((r for name, r in records.items() if name.lower() == action.lower()), None)
        else:
            record = max(records.values(), key=lambda r: r.start, default=None)
        if record is None:
            raise SimulatorError(f"device {found} has no {action or 'action'} result", status=409)
        record.fixed_state = state
        record.updated = time.time()
        return record.to_json(record.updated, self.behaviour_of(found))

    def _digits(self, count: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(count))

    def _passcode(self) -> str:
        alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
        return "".join(self.rng.choice(alphabet) for _ in range(8))

    # -- faults ------------------------------------------------------------------------------

    def add_faults(self, data: Any) -> list[FaultRule]:
        items = data if isinstance(data, list) else [data]
        rules = []
        for item in items:
            rules.append(FaultRule.from_json(self._next_fault_id, item))
            self._next_fault_id += 1
        self.faults.extend(rules)
        return rules

    def pick_faults(
        self, method: str, route: str | None, device_id: str | None, action: str | None
    ) -> tuple[float, FaultRule | None]:
        """Fire matching rules in order: every latency rule adds its delay; the first terminal
        rule wins. Each rule fires at most `times` times, with its `probability`."""
        latency = 0.0
        for rule in self.faults:
            if not rule.matches(method, route, device_id, action):
                continue
            if rule.probability < 1 and self.rng.random() >= rule.probability:
                continue
            rule.fired += 1
            if rule.terminal:
                return latency, rule
            latency += rule.latency_ms
        return latency, None

    # -- call log ----------------------------------------------------------------------------

    def log_call(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry["seq"] = len(self.calls) + 1
        self.calls.append(entry)
        return entry
