"""The soak's workload: one simulator device per request, cloned from the seeded fleet, and the
requests that target them (mixed platforms, identifier kinds, encodings, channels, duplicates).

Each request gets its own device so that the per-device cooldown never interferes and every
applied action in the simulator maps back to exactly one request. Everything is derived from a
seed: the same seed gives the same devices and requests.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from devstack.simulator import platforms as sim_platforms
from devstack.simulator.state import DEFAULT_FLEET, load_fleet
from shared.core.device import IntuneDevice
from shared.core.platforms import choose_action

Channel = Literal["queue", "queue-base64", "http"]
Duplicate = Literal["early", "late"] | None
IDENTIFIER_WEIGHTS = {"intuneDeviceId": 0.4, "serialNumber": 0.2, "imei": 0.2, "azureAdDeviceId": 0.2}


@dataclass(frozen=True)
class PlannedRequest:
    request_id: str
    device_id: str
    body: dict[str, Any]
    channel: Channel
    duplicate: Duplicate  # early: sent again at once; late: sent again after its final event
    acts: bool  # a reset that should call exactly one action (else: none)
    platform: str
    identifier: str

    def text(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


def templates() -> list[tuple[dict[str, Any], int]]:
    """Fleet devices as templates with a weight: platforms Intune can reset count three times."""
    result = []
    for device in load_fleet(DEFAULT_FLEET):
        clean = {k: v for k, v in device.items() if k not in ("@odata.type", "deviceActionResults")}
        supported = any(sim_platforms.supports(clean, action) for action in ("resetPasscode",))
        result.append((clean, 3 if supported or sim_platforms.is_macos(clean) else 1))
    return result


def build_plan(
    count: int, *, seed: int = 7, duplicate_share: float = 0.10, http_share: float = 0.05, base64_share: float = 0.10
) -> tuple[list[dict[str, Any]], list[PlannedRequest]]:
    """`count` devices (simulator properties) and one request for each."""
    rng = random.Random(seed)
    pool = templates()
    choices = [device for device, _ in pool]
    weights = [weight for _, weight in pool]
    devices: list[dict[str, Any]] = []
    plan: list[PlannedRequest] = []
    duplicates = set(rng.sample(range(count), round(count * duplicate_share)))
    for index in range(count):
        device = copy.deepcopy(rng.choices(choices, weights)[0])
        device_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        has_imei = bool(device.get("imei"))
        device.update(
            id=device_id,
            deviceName=f"soak-{index:05d} {device.get('deviceName') or ''}".strip(),
            serialNumber=f"SOAK{seed % 100:02d}{index:06d}",
            azureADDeviceId=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )
        if has_imei:
            device["imei"] = f"35{seed % 10}{index:012d}"
        devices.append(device)

        kinds = [k for k in IDENTIFIER_WEIGHTS if k != "imei" or has_imei]
        kind = rng.choices(kinds, [IDENTIFIER_WEIGHTS[k] for k in kinds])[0]
        value = {
            "intuneDeviceId": device_id,
            "serialNumber": device["serialNumber"],
            "imei": device.get("imei"),
            "azureAdDeviceId": device["azureADDeviceId"],
        }[kind]
        request_id = f"SOAK-{seed}-{index:05d}"
        body: dict[str, Any] = {
            "requestId": request_id,
            "device": {kind: value},
            "requestedBy": "soak@contoso.com",
            "reason": "soak test",
            "ticketId": f"SOAK{index:05d}",
            "correlationId": f"soak-{index}",
        }
        upn = device.get("userPrincipalName")
        mismatch = False
        roll = rng.random()
        if upn and roll < 0.30:
            body["expectedUserPrincipalName"] = upn.upper() if roll < 0.05 else upn
        elif upn and roll < 0.32:
            body["expectedUserPrincipalName"] = "someone.else@contoso.com"
            mismatch = True
        allow_lock = sim_platforms.is_macos(device) and rng.random() < 0.7
        if allow_lock:
            body["allowRemoteLock"] = True
        dry_run = rng.random() < 0.03
        if dry_run:
            body["dryRun"] = True
        decision = choose_action(IntuneDevice.from_graph(device).traits, allow_remote_lock=allow_lock)
        roll = rng.random()
        channel: Channel = "queue"
        if roll < http_share:
            channel = "http"
        elif roll < http_share + base64_share:
            channel = "queue-base64"
        duplicate: Duplicate = None
        if index in duplicates:
            duplicate = "early" if rng.random() < 0.5 else "late"
        plan.append(
            PlannedRequest(
                request_id=request_id,
                device_id=device_id,
                body=body,
                channel=channel,
                duplicate=duplicate,
                acts=decision.supported and not dry_run and not mismatch,
                platform=decision.platform.value,
                identifier=kind,
            )
        )
    return devices, plan
