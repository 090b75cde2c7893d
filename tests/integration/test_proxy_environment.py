"""The HTTP proxy of the environment (docs/decisions/0028-less-host-cpu-per-request.md).

Storage (shared/adapters/storage.py): the per-request look at proxy variables and netrc is skipped
only when the environment has none of them, so a proxy that is configured is still used. Real
Azurite, the real azure-storage-queue client, a process of its own per case (the environment is
read when the adapter is imported).

Graph (shared/adapters/graph_transport.py): the msgraph-sdk client sends through the proxy the
environment sets for the Graph root, and directly when `NO_PROXY` exempts it."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devstack.azurite import Azurite
from shared.adapters.graph import MsGraphIntuneGateway
from shared.adapters.graph_transport import environment_proxy
from shared.adapters.storage import environment_configures_http
from shared.core.errors import GraphTransientError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SEND = """
import asyncio, sys
from shared.adapters.storage import USE_ENV_SETTINGS, StorageClients, StorageQueue
from shared.core.errors import StorageUnavailable
from shared.settings import load_settings

async def main():
    settings = load_settings({"AzureWebJobsStorage": sys.argv[1], "RESET_REQUESTS_QUEUE": sys.argv[2]})
    clients = StorageClients(settings)
    try:
        await clients.ensure([sys.argv[2]], [])
        await StorageQueue(clients.queue(sys.argv[2]), sys.argv[2]).send_message("hello")
        print("sent", USE_ENV_SETTINGS)
    except StorageUnavailable:
        print("unavailable", USE_ENV_SETTINGS)
    finally:
        await clients.aclose()

asyncio.run(main())
"""


class RecordingProxy:
    """A forward proxy that records each request line it gets and answers 502 (so the call fails)."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.request_lines.append(line.decode(errors="replace").strip())
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy() as running:
        yield running


def clean_environment(home: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "NETRC"}
    return {**environ, "HOME": str(home), **extra}


async def send(environ: dict[str, str], connection: str) -> str:
    queue = f"proxy-env-{uuid.uuid4().hex[:10]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SEND,
        connection,
        queue,
        cwd=PROJECT_ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode().strip()


async def test_a_proxy_in_the_environment_carries_the_storage_calls(
    azurite: Azurite, proxy: RecordingProxy, tmp_path: Path
) -> None:
    environ = clean_environment(tmp_path, HTTP_PROXY=f"http://127.0.0.1:{proxy.port}")
    assert await send(environ, azurite.connection_string) == "unavailable True"
    port = str(azurite.ports.queue)
    assert proxy.request_lines and all(f"http://127.0.0.1:{port}/" in line for line in proxy.request_lines)


async def test_a_lower_case_proxy_variable_counts_too(azurite: Azurite, proxy: RecordingProxy, tmp_path: Path) -> None:
    environ = clean_environment(tmp_path, http_proxy=f"http://127.0.0.1:{proxy.port}")
    assert await send(environ, azurite.connection_string) == "unavailable True"
    assert proxy.request_lines


async def test_without_proxy_or_netrc_the_calls_go_direct(
    azurite: Azurite, proxy: RecordingProxy, tmp_path: Path
) -> None:
    assert await send(clean_environment(tmp_path), azurite.connection_string) == "sent False"
    assert proxy.request_lines == []


# ------------------------------------------------------------------ proxy settings of the environment


@pytest.mark.parametrize(
    ("environ", "netrc", "expected"),
    [
        ({}, False, False),
        ({"PATH": "/usr/bin", "HOME": "/home/app"}, False, False),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, False, True),
        ({"https_proxy": "http://proxy.corp:3128"}, False, True),
        ({"ALL_PROXY": "socks5://proxy.corp:1080"}, False, True),
        ({"NO_PROXY": "*.core.windows.net"}, False, True),
        ({"HTTPS_PROXY": ""}, False, False),  # set but empty: nothing to use
        ({"NETRC": "/etc/app.netrc"}, False, True),
        ({}, True, True),  # ~/.netrc
    ],
)
def test_storage_clients_read_proxy_settings_only_when_the_environment_has_some(
    environ: dict[str, str], netrc: bool, expected: bool, tmp_path: Path
) -> None:
    if netrc:
        (tmp_path / ".netrc").write_text("machine example.com login a password b\n")
    assert environment_configures_http(environ, tmp_path) is expected
    assert environment_configures_http(environ, None) is (expected and not netrc)


# ------------------------------------------------------------------------------------ Graph


def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


DEVICE = "0f2c7d4e-9a61-4b1e-8d3f-2a5c6e7b9d10"


@pytest.fixture
def proxy_in_environment(proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> RecordingProxy:
    """`HTTP_PROXY` names the recording proxy, no other proxy variable set."""
    for key in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    return proxy


async def device_read_error(graph: str) -> GraphTransientError:
    """The error of a device read from a gateway built for `graph` now (it reads the environment)."""
    gateway = MsGraphIntuneGateway.with_static_token(graph, "test-token")
    try:
        with pytest.raises(GraphTransientError) as raised:
            await gateway.get_device(DEVICE)
    finally:
        await gateway.aclose()
    return raised.value


async def test_graph_calls_go_through_the_environments_proxy(proxy_in_environment: RecordingProxy) -> None:
    graph = f"http://127.0.0.1:{unused_port()}"  # nothing listens there: only the proxy answers
    assert (await device_read_error(graph)).status == 502  # the proxy's answer
    [line] = proxy_in_environment.request_lines  # the absolute URI a client sends to a forward proxy
    assert line.startswith(f"GET {graph}/beta/deviceManagement/managedDevices/{DEVICE}?")


async def test_graph_calls_skip_the_proxy_for_a_no_proxy_host(
    proxy_in_environment: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    error = await device_read_error(f"http://127.0.0.1:{unused_port()}")
    assert "cannot connect to Graph" in str(error)
    assert proxy_in_environment.request_lines == []


@pytest.mark.parametrize(
    ("proxies", "expected"),
    [
        ({}, None),
        ({"https": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"all": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"http": "http://proxy.corp:3128"}, None),  # Graph is https
        ({"https": "http://proxy.corp:3128", "no": "graph.microsoft.com"}, None),
        ({"https": "http://proxy.corp:3128", "no": ".microsoft.com"}, None),
        ({"https": "http://proxy.corp:3128", "no": "*"}, None),
        ({"https": "http://proxy.corp:3128", "no": "login.microsoftonline.com"}, "http://proxy.corp:3128"),
        ({"https": "http://proxy.corp:3128", "no": "localhost, microsoft.com"}, None),  # a parent domain
        ({"https": "http://proxy.corp:3128", "no": "GRAPH.microsoft.com:443"}, None),  # case and port
        ({"https": "http://proxy.corp:3128", "no": "aph.microsoft.com,::1"}, "http://proxy.corp:3128"),
        ({"all": "socks5://proxy.corp:1080"}, None),  # httpx needs an extra package for SOCKS
    ],
)
def test_the_graph_proxy_for_the_graph_root(proxies: dict[str, str], expected: str | None) -> None:
    assert environment_proxy("https://graph.microsoft.com", proxies) == expected
