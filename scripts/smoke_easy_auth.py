"""Post-deployment smoke test: does App Service Authentication (Easy Auth) guard the HTTP API?

With `authEnabled` the app runs with AUTH_REQUIRE_ROLES=true and trusts the caller's app roles from
the `X-MS-CLIENT-PRINCIPAL` header, which only Easy Auth may set. If Easy Auth is not in front (not
configured, switched off in the portal, or the route excluded), anyone holding the function key can
forge that header and act with any role. This sends, with the function key but without a bearer
token:

1. a forged principal holding every PasscodeReset.* role, to the status route of a request that does
   not exist (harmless if it gets through: a 404);
2. the same call without the header;

and expects 401 from Easy Auth for both; `/api/health` (excluded from authentication) must answer.

    eval "$(azd env get-values)"
    python scripts/smoke_easy_auth.py            # URL from AZURE_FUNCTION_URL, key from FUNCTION_KEY or az

The function key comes from FUNCTION_KEY, else from `az functionapp keys list` with
AZURE_RESOURCE_GROUP and AZURE_FUNCTION_NAME. It is never printed. Standard library only.
Exit status 0 when Easy Auth answers 401 to both calls, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

ROLES = ("PasscodeReset.Submit", "PasscodeReset.Read", "PasscodeReset.RevealPasscode")


def forged_principal() -> str:
    """An Easy Auth client principal as the app reads it, claiming every app role."""
    document = {
        "auth_typ": "aad",
        "name_typ": "name",
        "role_typ": "roles",
        "claims": [{"typ": "name", "val": "forged-by-smoke-test"}, *({"typ": "roles", "val": r} for r in ROLES)],
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


def status_of(url: str, headers: dict[str, str], timeout: float) -> int | str:
    request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310 - https URL of the app
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError) as error:
        return f"no answer ({type(error).__name__})"


def function_key() -> str | None:
    key = os.environ.get("FUNCTION_KEY")
    if key:
        return key
    group, app = os.environ.get("AZURE_RESOURCE_GROUP"), os.environ.get("AZURE_FUNCTION_NAME")
    az = shutil.which("az")
    if not (group and app and az):
        return None
    completed = subprocess.run(  # noqa: S603 - fixed command line, values from azd's environment
        [az, "functionapp", "keys", "list", "-g", group, "-n", app, "--query", "functionKeys.default", "-o", "tsv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return completed.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that Easy Auth answers 401 to a forged client principal.")
    parser.add_argument("--url", default=os.environ.get("AZURE_FUNCTION_URL"), help="https://<app>.azurewebsites.net")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.url:
        print('smoke: no URL (set AZURE_FUNCTION_URL, e.g. eval "$(azd env get-values)", or pass --url)')
        return 1
    key = function_key()
    if not key:
        print(
            "smoke: no function key (set FUNCTION_KEY, or AZURE_RESOURCE_GROUP and AZURE_FUNCTION_NAME with az login)"
        )
        return 1
    base = args.url.rstrip("/")
    status_url = f"{base}/api/resets/smoke-forged-{uuid.uuid4().hex[:12]}"
    keyed = {"x-functions-key": key}

    health = status_of(f"{base}/api/health", {}, args.timeout)
    forged = status_of(status_url, {**keyed, "X-MS-CLIENT-PRINCIPAL": forged_principal()}, args.timeout)
    plain = status_of(status_url, keyed, args.timeout)

    print(f"smoke: GET /api/health (open) -> {health}")
    print(f"smoke: GET /api/resets/<unknown> with function key and a forged X-MS-CLIENT-PRINCIPAL -> {forged}")
    print(f"smoke: GET /api/resets/<unknown> with function key, no bearer token -> {plain}")
    failures = []
    if not isinstance(health, int) or health == 401:
        failures.append("/api/health should answer without a token: check the URL and authsettingsV2 excludedPaths")
    if forged != 401 or plain != 401:
        failures.append(
            "Easy Auth does not guard the API: a call without a bearer token got past it. With "
            "AUTH_REQUIRE_ROLES=true the app then trusts any X-MS-CLIENT-PRINCIPAL, so anyone with the "
            "function key acts with every role. Check authEnabled and the app's Authentication blade "
            "(require authentication, return 401), or turn AUTH_REQUIRE_ROLES off."
        )
    for failure in failures:
        print(f"smoke: FAILED: {failure}")
    if not failures:
        print("smoke: OK: Easy Auth answers 401 to calls without a bearer token, forged principal or not")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
