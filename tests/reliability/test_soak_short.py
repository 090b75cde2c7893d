"""The fault soak (bench/soak.py) in small: a few hundred requests, every simulator fault (500 and
502 after an applied action included), and one SIGKILL of the host with a restart, on Azurite with
on-disk persistence. Nothing may be lost, no
request may get two final event ids or two actions, and no secret may show up in any log line or
event of the run (the passcodes revealed through the API included)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.soak import SoakConfig, run_soak


async def test_short_soak_with_a_host_kill_loses_nothing_and_acts_once() -> None:
    config = SoakConfig(
        requests=200,
        kills=1,
        window=200,
        lease_seconds=4.0,  # messages a killed host held come back after 4 s
        action_lease_seconds=10,  # the workflow's wait before acting again on an unconfirmed call
        drop_reads=False,  # dropped reads only add 5-30 s waits; dropped action calls are what matters here
        reveals=10,
        after_apply_5xx=0.04,  # a 500 or 502 after the action was applied: a few of each in 200 requests
        timeout=110.0,  # a bound, not the duration: a 5xx on an unapplied POST now waits out the action lease
        quiet=True,
    )
    report = await run_soak(config)
    summary = report.line() + "\n" + repr(report.details)
    assert report.kills == 1, summary
    assert report.lost == 0, summary
    assert report.duplicate_finals == 0, summary
    assert report.duplicate_actions == 0, summary
    fired = report.details["faults_fired"]
    assert fired["500_after_apply"] > 0 and fired["502_after_apply"] > 0, summary  # and still one action each
    assert report.unexpected_actions == 0, summary
    assert report.final_events == report.requests, summary
    assert report.messages_sent > report.requests, "duplicates were sent"
    assert report.statuses.get("completed", 0) > report.requests // 2, summary
    assert report.details["stray_final_request_ids"] == [], summary
    # The leak scan covered every kind of secret, and passcodes really went through the API.
    scanned = report.details["secrets_scanned"]
    assert scanned["passcode"] > 10 and report.details["reveals"] == 10, summary
    assert report.leaks == 0, summary


async def test_the_soak_simulator_takes_a_token_that_starts_with_a_dash(tmp_path: Path) -> None:
    """The soak (and `make run`) give the simulator a random `secrets.token_urlsafe` token, which
    starts with "-" about once in 64 runs; it must reach the simulator as the token, not as an
    unknown option that stops it (a flaky CI failure of the short soak until 2026-12-07)."""
    import aiohttp

    from bench.soak import start_simulator

    token = "-starts-with-a-dash"
    child, url = await start_simulator(tmp_path, token, SoakConfig(requests=1))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/v1.0/deviceManagement/managedDevices?$top=1",
                                headers={"Authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200
            async with http.get(f"{url}/v1.0/deviceManagement/managedDevices?$top=1",
                                headers={"Authorization": "Bearer another"}) as answer:
                assert answer.status == 401
    finally:
        await asyncio.to_thread(child.stop)
