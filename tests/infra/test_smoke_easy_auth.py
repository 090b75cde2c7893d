"""scripts/smoke_easy_auth.py against stand-ins of the deployed app, with and without Easy Auth.

The stand-in without Easy Auth behaves as the app does with AUTH_REQUIRE_ROLES=true: it checks the
function key and believes X-MS-CLIENT-PRINCIPAL (shared/api/auth.py), so a forged principal reads
a request's status (404 for an unknown one). The script must pass only when Easy Auth answers 401.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.infra import bicep

SCRIPT = bicep.REPO / "scripts" / "smoke_easy_auth.py"
KEY = "fk-smoke-test-secret-0123456789"


def handler_for(mode: str) -> type[BaseHTTPRequestHandler]:
    class App(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/health":
                return self.answer(200)
            if mode == "easy_auth" and not self.headers.get("Authorization"):
                return self.answer(401)  # Easy Auth: requireAuthentication, Return401
            if self.headers.get("x-functions-key") != KEY:
                return self.answer(401)  # the Functions host's key check
            principal = self.headers.get("X-MS-CLIENT-PRINCIPAL")
            if principal is None:
                return self.answer(401)  # the app: no readable principal in roles mode
            claims = json.loads(base64.b64decode(principal))["claims"]
            roles = {claim["val"] for claim in claims if claim["typ"] == "roles"}
            return self.answer(404 if "PasscodeReset.Read" in roles else 403)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return App


@contextmanager
def app(mode: str) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(mode))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def smoke(url: str, *, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"FUNCTION_KEY": key} if key else {})}
    return subprocess.run(  # noqa: S603
        [sys.executable, str(SCRIPT), "--url", url, "--timeout", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_passes_when_easy_auth_answers_401_without_a_bearer_token() -> None:
    with app("easy_auth") as url:
        completed = smoke(url)
    assert completed.returncode == 0, completed.stdout
    assert "forged X-MS-CLIENT-PRINCIPAL -> 401" in completed.stdout
    assert "smoke: OK" in completed.stdout


def test_fails_when_the_app_trusts_a_forged_principal_without_easy_auth() -> None:
    with app("trusting") as url:
        completed = smoke(url)
    assert completed.returncode == 1
    assert "forged X-MS-CLIENT-PRINCIPAL -> 404" in completed.stdout
    assert "Easy Auth does not guard the API" in completed.stdout


@pytest.mark.parametrize("mode", ["easy_auth", "trusting"])
def test_never_prints_the_function_key(mode: str) -> None:
    with app(mode) as url:
        completed = smoke(url)
    assert KEY not in completed.stdout + completed.stderr


def test_fails_without_a_function_key_rather_than_mistaking_the_hosts_401_for_easy_auth() -> None:
    with app("trusting") as url:
        completed = smoke(url, key=None)
    assert completed.returncode == 1
    assert "no function key" in completed.stdout


def test_fails_when_the_app_does_not_answer() -> None:
    with app("easy_auth") as url:
        pass
    completed = smoke(url)
    assert completed.returncode == 1
    assert "no answer" in completed.stdout
