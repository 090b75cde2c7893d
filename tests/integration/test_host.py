"""The devstack host against real Azurite: queue semantics of the Functions queue extension,
HTTP triggers, structured logs and shutdown. No Azure SDK is mocked."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from devstack.host import DevHost, HostConfigurationError, JsonFormatter, parse_timespan
from devstack.settings import MissingSettingError, load_settings, resolve_tokens
from tests.apps import queue_app
from tests.apps.recorder import Recorder
from tests.plugins.stack import PROJECT_ROOT, TEST_FUNCTION_KEY, Queues, fast_host_json

HTTP_APP = "tests.apps.http_app:app"
KEY_HEADER = {"x-functions-key": TEST_FUNCTION_KEY}


# -- settings and host.json ---------------------------------------------------------------------


def test_settings_environment_wins_over_local_settings(tmp_path: Path) -> None:
    file = tmp_path / "local.settings.json"
    file.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file", "C": True}}))
    settings = load_settings(file, environ={"A": "env"})
    assert (settings["A"], settings["B"], settings["C"]) == ("env", "file", "true")
    assert dict(settings.file_values) == {"A": "file", "B": "file", "C": "true"}


def test_tokens_resolve_embedded_and_name_the_missing_setting() -> None:
    settings = {"RESET_REQUESTS_QUEUE": "requests", "ENV": "dev"}
    assert resolve_tokens("%RESET_REQUESTS_QUEUE%-poison", settings) == "requests-poison"
    assert resolve_tokens("%ENV%-%RESET_REQUESTS_QUEUE%", settings) == "dev-requests"
    with pytest.raises(MissingSettingError, match="RESET_RESULTS_QUEUE"):
        resolve_tokens("%RESET_RESULTS_QUEUE%", settings)


def test_timespans() -> None:
    assert parse_timespan("00:00:30", "k") == 30
    assert parse_timespan("1.00:00:00.5", "k") == 86400.5
    with pytest.raises(HostConfigurationError, match="visibilityTimeout"):
        parse_timespan("30s", "extensions.queues.visibilityTimeout")


# -- queue triggers -------------------------------------------------------------------------------


async def test_poison_after_max_dequeue_count(start_host, queues: Queues) -> None:
    recorder, name = Recorder(), queues.new("poison")
    host_json = fast_host_json(maxDequeueCount=3, messageEncoding="none")
    async with start_host(queue_app.always_failing_app(recorder), {"IN_QUEUE": name}, host_json) as host:
        await queues.send(name, '{"requestId": "P-1"}')
        await host.drain([name], timeout=10)
        await asyncio.sleep(0.3)  # a fourth invocation would have happened by now
    assert recorder.snapshot() == [1, 2, 3]
    assert await queues.read_all(f"{name}-poison") == ['{"requestId": "P-1"}']
    assert await queues.count(name) == 0


async def test_message_already_over_the_limit_goes_to_poison_without_invocation(
    start_host, queues: Queues
) -> None:
    recorder, name = Recorder(), queues.new("overlimit")
    await queues.send(name, "stale")
    client = queues.service.get_queue_client(name)
    for _ in range(2):  # received twice and never deleted: dequeue count 3 at the host's receive
        message = await client.receive_message(visibility_timeout=5)
        assert message is not None
        await client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    host_json = fast_host_json(maxDequeueCount=2, messageEncoding="none")
    async with start_host(queue_app.always_failing_app(recorder), {"IN_QUEUE": name}, host_json) as host:
        await host.drain([name], timeout=10)
    assert recorder.snapshot() == []
    assert await queues.read_all(f"{name}-poison") == ["stale"]


@pytest.mark.parametrize(
    ("host_json_functions", "settings"),
    [
        (["first"], {}),  # host.json `functions`: only the functions named run
        (None, {"AzureWebJobs.second.Disabled": "true"}),  # Azure's app setting to disable one
    ],
    ids=["host.json functions", "AzureWebJobs.<name>.Disabled"],
)
async def test_a_host_runs_only_its_enabled_functions(
    start_host, queues: Queues, host_json_functions: list[str] | None, settings: dict[str, str]
) -> None:
    recorder, first, second = Recorder(), queues.new("first"), queues.new("second")
    host_json = fast_host_json(messageEncoding="none")
    if host_json_functions is not None:
        host_json["functions"] = host_json_functions
    settings = {"FIRST_QUEUE": first, "SECOND_QUEUE": second, **settings}
    async with start_host(queue_app.two_queues_app(recorder), settings, host_json) as host:
        await queues.send(first, "a")
        await queues.send(second, "b")
        await host.drain([first], timeout=10)
        await asyncio.sleep(0.5)  # the second function would have run by now
    assert recorder.snapshot() == ["first:a"]
    assert await queues.read_all(second) == ["b"]  # left for the instances that run it


async def test_host_json_functions_naming_no_function_of_the_app_fails_start(start_host, queues: Queues) -> None:
    host_json = {**fast_host_json(messageEncoding="none"), "functions": ["first", "thrid"]}
    settings = {"FIRST_QUEUE": queues.new("first"), "SECOND_QUEUE": queues.new("second")}
    with pytest.raises(HostConfigurationError, match="no function 'thrid'"):
        async with start_host(queue_app.two_queues_app(Recorder()), settings, host_json):
            pass


async def test_output_is_written_only_when_the_function_succeeds(start_host, queues: Queues) -> None:
    recorder, source, target = Recorder(), queues.new("in"), queues.new("out")
    host_json = fast_host_json(maxDequeueCount=1, messageEncoding="none")
    settings = {"IN_QUEUE": source, "OUT_QUEUE": target}
    async with start_host(queue_app.output_app(recorder), settings, host_json) as host:
        for body in ("ok", "fail", "many"):
            await queues.send(source, body)
        await host.drain([source], timeout=10)
    assert sorted(recorder.snapshot()) == ["fail", "many", "ok"]
    assert sorted(await queues.read_all(target)) == ["echo:ok", "first", "second"]
    assert await queues.read_all(f"{source}-poison") == ["fail"]


async def test_base64_encoding_decodes_bodies_and_encodes_outputs(start_host, queues: Queues) -> None:
    recorder, source, target = Recorder(), queues.new("b64in"), queues.new("b64out")
    payload = b"\x00\xff binary \xe2\x82\xac"
    host_json = fast_host_json(messageEncoding="base64", maxDequeueCount=1)
    settings = {"IN_QUEUE": source, "OUT_QUEUE": target}
    async with start_host(queue_app.bytes_app(recorder), settings, host_json) as host:
        await queues.send(source, base64.b64encode(payload).decode())
        await queues.send(source, "this is not base64!")
        await host.drain([source], timeout=10)
    assert recorder.snapshot() == [payload]  # the invalid body never reached the function
    assert [base64.b64decode(raw) for raw in await queues.read_all(target)] == [payload]
    assert await queues.read_all(f"{source}-poison") == ["this is not base64!"]


async def test_none_encoding_passes_plain_text(start_host, queues: Queues) -> None:
    recorder, source, target = Recorder(), queues.new("plainin"), queues.new("plainout")
    text = '{"requestId": "héllo-1", "reason": "<xml & friends>"}'
    settings = {"IN_QUEUE": source, "OUT_QUEUE": target}
    async with start_host(queue_app.bytes_app(recorder), settings, fast_host_json(messageEncoding="none")) as host:
        await queues.send(source, text)
        await host.drain([source], timeout=10)
    assert recorder.snapshot() == [text.encode()]
    assert await queues.read_all(target) == [text]


async def test_setting_tokens_in_queue_names(start_host, queues: Queues) -> None:
    recorder, prefix = Recorder(), queues.new("tok")
    queues.created += [f"{prefix}-in", f"{prefix}-results"]
    settings = {"QUEUE_PREFIX": prefix, "OUT_SUFFIX": "results"}
    async with start_host(queue_app.token_app(recorder), settings, fast_host_json(messageEncoding="none")) as host:
        assert host.queue_names() == [f"{prefix}-in"]
        await queues.send(f"{prefix}-in", "hello")
        await host.drain(["%QUEUE_PREFIX%-in"], timeout=10)
    assert recorder.snapshot() == ["hello"]
    assert await queues.read_all(f"{prefix}-results") == ["done"]


async def test_missing_setting_fails_start_naming_it(start_host, queues: Queues) -> None:
    with pytest.raises(MissingSettingError, match="OUT_SUFFIX"):
        async with start_host(queue_app.token_app(Recorder()), {"QUEUE_PREFIX": queues.new("x")}):
            pass


async def test_identity_based_connection_is_refused_clearly(queues: Queues) -> None:
    settings = {"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net", "IN_QUEUE": "q"}
    host = DevHost(queue_app.always_failing_app(Recorder()), settings, fast_host_json())
    with pytest.raises(HostConfigurationError, match="identity-based"):
        await host.start()


async def test_concurrency_honours_batch_size_and_threshold(start_host, queues: Queues) -> None:
    recorder, name = Recorder(), queues.new("conc")
    host_json = fast_host_json(batchSize=4, newBatchThreshold=2, messageEncoding="none")
    for index in range(24):
        await queues.send(name, f"m{index}")
    async with start_host(queue_app.sleeping_app(recorder, 0.15), {"IN_QUEUE": name}, host_json) as host:
        await host.drain([name], timeout=15)
    assert len([e for e in recorder.snapshot() if e[0] == "finished"]) == 24
    assert 4 <= recorder.max_in_flight <= 6  # batchSize + newBatchThreshold


async def test_lease_is_renewed_for_long_invocations(start_host, queues: Queues) -> None:
    recorder, name = Recorder(), queues.new("lease")
    app = queue_app.sleeping_app(recorder, 2.6)
    async with start_host(app, {"IN_QUEUE": name}, lease_seconds=2) as host:  # renewed every second
        await queues.send(name, "long")
        await host.drain([name], timeout=10)
    assert [e[0] for e in recorder.snapshot()] == ["started", "finished"]  # never redelivered
    assert await queues.count(name) == 0  # deleted with the renewed pop receipt


async def test_export_env_puts_settings_in_os_environ_while_running(start_host, queues: Queues) -> None:
    name = queues.new("env")
    assert "IN_QUEUE" not in os.environ
    async with start_host(queue_app.always_failing_app(Recorder()), {"IN_QUEUE": name}, export_env=True):
        assert os.environ["IN_QUEUE"] == name
    assert "IN_QUEUE" not in os.environ


# -- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Host and app records rendered by the host's JsonFormatter, like ``python -m devstack host``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("devstack.host"), queue_app.app_log]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger, level in zip(loggers, saved, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_json_log_lines_parse_and_never_contain_the_body(
    start_host, queues: Queues, json_log: io.StringIO
) -> None:
    recorder, name = Recorder(), queues.new("logs")
    secret = "PASSCODE-314159-SECRET"
    async with start_host(queue_app.logging_app(recorder), {"IN_QUEUE": name}, fast_host_json()) as host:
        await queues.send(name, json.dumps({"passcode": secret}), base64_encode=True)
        await host.drain([name], timeout=10)
    text = json_log.getvalue()
    assert secret not in text and base64.b64encode(secret.encode()).decode()[:12] not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    by_message = {(r["message"], r.get("dequeue_count")): r for r in records}
    failed = by_message[("function failed", 1)]
    assert failed["level"] == "ERROR" and "first attempt fails" in failed["exception"]
    succeeded = by_message[("function succeeded", 2)]
    assert succeeded["queue"] == name and succeeded["duration_ms"] >= 0
    app_records = [r for r in records if r["logger"] == queue_app.app_log.name]
    contexts = recorder.snapshot()
    assert [r["request_id"] for r in app_records] == ["REQ-1", "REQ-1"]
    assert [r["invocation_id"] for r in app_records] == [c["invocation_id"] for c in contexts]
    assert contexts[0]["function_name"] == "chatty" and contexts[0]["retry_count"] == 0
    assert contexts[0]["trace_parent"].startswith("00-")
    assert Path(contexts[0]["function_directory"]) == Path(queue_app.__file__).parent


# -- shutdown -------------------------------------------------------------------------------------


async def test_stop_waits_for_in_flight_invocations(start_host, queues: Queues) -> None:
    recorder, name = Recorder(), queues.new("graceful")
    async with start_host(queue_app.sleeping_app(recorder, 0.5), {"IN_QUEUE": name}) as host:
        for index in range(3):
            await queues.send(name, f"m{index}")
        await recorder.wait_for(lambda events: len(events) == 3)
        await host.stop()
        assert host.in_flight == 0
    assert sorted(e[1] for e in recorder.snapshot() if e[0] == "finished") == ["m0", "m1", "m2"]
    assert await queues.count(name) == 0


async def test_stop_is_bounded_and_releases_unfinished_messages(start_host, queues: Queues) -> None:
    recorder, name = Recorder(), queues.new("bounded")
    async with start_host(queue_app.sleeping_app(recorder, 30), {"IN_QUEUE": name}) as host:
        await queues.send(name, "long")
        await recorder.wait_for(lambda events: len(events) == 1)
        started = time.monotonic()
        await host.stop(timeout=0.3)
        assert time.monotonic() - started < 3
    client = queues.service.get_queue_client(name)
    released = [m async for m in client.receive_messages()]  # visible again right away
    assert [(m.content, m.dequeue_count) for m in released] == [("long", 2)]


# -- HTTP triggers --------------------------------------------------------------------------------


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_http_function_keys(start_host, queues: Queues, http: aiohttp.ClientSession) -> None:
    async with start_host(HTTP_APP, {"HTTP_OUT_QUEUE": queues.new("http")}) as host:
        url = f"{host.url}/api/resets/REQ-1"
        async with http.get(url) as response:
            assert (response.status, await response.read()) == (401, b"")
        async with http.get(url, headers={"x-functions-key": "wrong"}) as response:
            assert response.status == 401
        async with http.get(url, headers=KEY_HEADER) as response:
            assert response.status == 200
        async with http.get(url, params={"code": TEST_FUNCTION_KEY}) as response:
            assert response.status == 200
        async with http.get(f"{host.url}/api/health") as response:
            assert (response.status, await response.text()) == (200, "ok")


async def test_http_routing(start_host, queues: Queues, http: aiohttp.ClientSession) -> None:
    async with start_host(HTTP_APP, {"HTTP_OUT_QUEUE": queues.new("http")}) as host:
        async with http.get(f"{host.url}/api/resets/INC%2F7:a?x=1", headers=KEY_HEADER) as response:
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            assert await response.json() == {"route": "status", "requestId": "INC/7:a", "params": {"x": "1"}}
        async with http.get(f"{host.url}/api/resets/R-2/passcode", headers=KEY_HEADER) as response:
            assert await response.json() == {"route": "passcode", "requestId": "R-2"}
        async with http.post(f"{host.url}/api/resets/R-2", headers=KEY_HEADER) as response:
            assert (response.status, response.headers["Allow"]) == (405, "GET")
        for path in ("/api/unknown", "/api/resets/R-2/passcode/extra", "/resets/R-2"):
            async with http.get(f"{host.url}{path}", headers=KEY_HEADER) as response:
                assert response.status == 404, path


async def test_http_request_and_response_mapping(start_host, queues: Queues, http: aiohttp.ClientSession) -> None:
    async with start_host(HTTP_APP, {"HTTP_OUT_QUEUE": queues.new("http")}) as host:
        async with http.put(f"{host.url}/api/echo", data=b"payload", headers={"X-Test": "t"}) as response:
            assert response.status == 201
            assert response.headers["X-Echo"] == "yes"
            assert response.headers["Content-Type"] == "application/problem+json; charset=utf-8"
            assert await response.json(content_type=None) == {"method": "PUT", "body": "payload", "header": "t"}
        async with http.get(f"{host.url}/api/boom") as response:
            assert (response.status, await response.read()) == (500, b"")


async def test_http_output_binding_written_only_on_success(
    start_host, queues: Queues, http: aiohttp.ClientSession
) -> None:
    target = queues.new("httpout")
    async with start_host(HTTP_APP, {"HTTP_OUT_QUEUE": target}, fast_host_json(messageEncoding="none")) as host:
        async with http.post(f"{host.url}/api/enqueue", data="first", headers=KEY_HEADER) as response:
            assert response.status == 202
        async with http.post(f"{host.url}/api/enqueue?fail=1", data="second", headers=KEY_HEADER) as response:
            assert response.status == 500
    assert await queues.read_all(target) == ["first"]


async def test_route_prefix_from_host_json(start_host, queues: Queues, http: aiohttp.ClientSession) -> None:
    host_json = {"extensions": {"http": {"routePrefix": ""}}}
    async with start_host(HTTP_APP, {"HTTP_OUT_QUEUE": queues.new("http")}, host_json) as host:
        async with http.get(f"{host.url}/health") as response:
            assert response.status == 200


async def test_generated_function_key_when_not_configured(azurite, queues: Queues) -> None:
    settings = {"AzureWebJobsStorage": azurite.connection_string, "HTTP_OUT_QUEUE": queues.new("http")}
    async with DevHost(HTTP_APP, settings, fast_host_json()) as host, aiohttp.ClientSession() as http:
        assert len(host.function_key) >= 20
        async with http.get(f"{host.url}/api/resets/X", params={"code": host.function_key}) as response:
            assert response.status == 200


# -- the CLI --------------------------------------------------------------------------------------


async def test_cli_host_serves_and_exits_zero_on_sigterm(azurite, queues: Queues, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "HTTP_OUT_QUEUE": queues.new("cli"),
        "DEVSTACK_FUNCTION_KEY": TEST_FUNCTION_KEY,
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps(fast_host_json()))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack", "host", "--app", HTTP_APP, "--port", "0",
        "--settings", str(tmp_path / "absent.json"), "--host-json", str(host_json),
        cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        ready = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert ready.startswith("host listening on http://127.0.0.1:"), ready
        assert ready.rstrip().endswith("(6 functions)")
        url = ready.split()[3]
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/health") as response:
            assert (response.status, await response.text()) == (200, "ok")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        log_lines = (await process.stderr.read()).decode().splitlines()
        messages = [json.loads(line)["message"] for line in log_lines]
        assert "http request" in messages and messages[-1] == "host stopped"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
