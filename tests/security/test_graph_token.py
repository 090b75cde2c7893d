"""`GRAPH_TOKEN` is a static bearer token for a local simulator only (docs/contract.md#settings): refused at
start-up for any Graph URL that is not loopback `http`, with a message that names the setting and
never the token, and never sent to another host."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.adapters.graph import StaticTokenProvider
from shared.settings import SettingsError, load_settings

TOKEN = "st4tic-T0KEN-n3ver-l0gged"
BASE = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "RESET_REQUESTS_QUEUE": "passcode-reset-requests",
    "RESET_FOLLOWUPS_QUEUE": "passcode-reset-followups",
}
NOT_LOOPBACK_HTTP = [
    "https://graph.microsoft.com",
    "http://graph.microsoft.com",
    "https://127.0.0.1:8950",  # loopback, but not the plain-http simulator
    "http://127.0.0.1@graph.microsoft.com",  # userinfo: the host is graph.microsoft.com
    "http://127.0.0.1%2f@graph.microsoft.com",
    "http://127.0.0.1.nip.io:8950",  # a DNS name that merely starts like a loopback address
    "http://localhost.contoso.com",
    "http://0.0.0.0:8950",
    "http://169.254.169.254",  # the instance metadata endpoint
    "http://10.0.0.5:8950",
    "http://[::ffff:8.8.8.8]",
]


@pytest.mark.parametrize("url", NOT_LOOPBACK_HTTP)
def test_graph_token_is_refused_for_a_graph_url_that_is_not_loopback_http(url: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({**BASE, "GRAPH_BASE_URL": url, "GRAPH_TOKEN": TOKEN})
    assert "GRAPH_TOKEN" in str(refused.value)
    assert TOKEN not in str(refused.value) and TOKEN not in repr(refused.value)


def test_the_host_does_not_start_with_a_token_for_real_graph() -> None:
    """The Functions host (here the devstack host) fails at start-up naming the setting."""
    env = {
        **os.environ,
        **BASE,
        "RESET_RESULTS_QUEUE": "passcode-reset-results",
        "RESET_LEDGER_TABLE": "PasscodeResets",
        "GRAPH_BASE_URL": "https://graph.microsoft.com",
        "GRAPH_TOKEN": TOKEN,
        "DEVSTACK_FUNCTION_KEY": "k",
    }
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "host", "--port", "0", "--settings", "no-such-file.json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "GRAPH_TOKEN" in output and "host listening" not in output
    assert TOKEN not in output


async def test_the_token_is_only_given_to_the_configured_graph_host() -> None:
    provider = StaticTokenProvider(TOKEN, "127.0.0.1")
    assert await provider.get_authorization_token("http://127.0.0.1:8950/v1.0/deviceManagement") == TOKEN
    for elsewhere in ("https://graph.microsoft.com/v1.0/me", "http://127.0.0.2/v1.0", "http://localhost/v1.0"):
        assert await provider.get_authorization_token(elsewhere) == ""
