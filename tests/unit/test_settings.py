"""docs/contract.md#settings: settings are validated once, with messages naming the setting."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_defaults_follow_the_spec() -> None:
    s = load_settings(BASE)
    assert (s.requests_queue, s.results_queue, s.followups_queue, s.ledger_table) == (
        "passcode-reset-requests", "passcode-reset-results", "passcode-reset-followups", "PasscodeResets")
    assert s.graph_base_url == "https://graph.microsoft.com"
    assert (s.confirm_first_check_seconds, s.confirm_timeout_seconds, s.cooldown_seconds) == (60, 86400, 900)
    assert s.allow_passcode_reveal is False and s.graph_token is None


def test_identity_based_storage_is_accepted() -> None:
    s = load_settings({
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
        "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net",
        "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
    })
    assert s.storage_connection is None and s.storage_service_uris["queue"].startswith("https://acct.queue")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "AzureWebJobsStorage"),
        ({**BASE, "RESET_REQUESTS_QUEUE": "Bad_Name"}, "RESET_REQUESTS_QUEUE"),
        ({**BASE, "RESET_REQUESTS_QUEUE": "q" * 60}, "RESET_REQUESTS_QUEUE: at most 56"),
        ({**BASE, "RESET_RESULTS_QUEUE": "passcode-reset-requests"}, "must be four different queues"),
        ({**BASE, "RESET_LEDGER_TABLE": "bad-table"}, "RESET_LEDGER_TABLE"),
        ({**BASE, "CONFIRM_TIMEOUT_SECONDS": "soon"}, "CONFIRM_TIMEOUT_SECONDS"),
        ({**BASE, "RESET_COOLDOWN_SECONDS": "-5"}, "RESET_COOLDOWN_SECONDS"),
        ({**BASE, "ALLOW_PASSCODE_REVEAL": "maybe"}, "ALLOW_PASSCODE_REVEAL"),
        ({**BASE, "GRAPH_BASE_URL": "graph.microsoft.com"}, "GRAPH_BASE_URL"),
        ({**BASE, "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0"}, "GRAPH_BASE_URL: give the Graph root"),
        ({**BASE, "GRAPH_BASE_URL": "http://graph.example.com"}, "GRAPH_BASE_URL: plain http"),
    ],
)
def test_invalid_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


@pytest.mark.parametrize("url", ["https://graph.microsoft.com", "http://graph.contoso.com", "http://10.0.0.5:8950",
                                 "https://127.0.0.1:8950"])
def test_static_graph_token_is_refused_outside_loopback_http(url: str) -> None:
    with pytest.raises(SettingsError, match="GRAPH_TOKEN"):
        load_settings({**BASE, "GRAPH_BASE_URL": url, "GRAPH_TOKEN": "t0ken"})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8950", "http://localhost:8950", "http://[::1]:8950"])
def test_static_graph_token_is_accepted_for_a_loopback_simulator(url: str) -> None:
    assert load_settings({**BASE, "GRAPH_BASE_URL": url, "GRAPH_TOKEN": "t0ken"}).graph_token == "t0ken"


def test_settings_repr_hides_secrets() -> None:
    s = load_settings({"AzureWebJobsStorage": "AccountKey=SUPERSECRET", "GRAPH_BASE_URL": "http://127.0.0.1:1",
                       "GRAPH_TOKEN": "TOKENVALUE"})
    assert "SUPERSECRET" not in repr(s) and "TOKENVALUE" not in repr(s)


def test_error_message_does_not_echo_the_token() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, "GRAPH_TOKEN": "TOKENVALUE"})
    assert "TOKENVALUE" not in str(info.value)
