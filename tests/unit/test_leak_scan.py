"""The soak's leak scan (bench/leak_scan.py): a secret counts where it appears verbatim or
JSON-escaped as a whole token, exactly as the per-secret regex scan it replaced decided, and one
scan of a 5,000-request soak's worth of text (14 MB, 4,000 passcodes) takes seconds, not minutes."""

from __future__ import annotations

import json
import random
import re
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.leak_scan import find_leaks
from devstack.azurite import ACCOUNT_KEY

PASSCODE = "Xk7pQ2mZ"
TOKEN = "dQw4w9WgXcQ-a_b.c~d"  # token_urlsafe-like, with separators inside
QUOTED = 'pa"ss\\word'  # JSON-escaped as pa\"ss\\word


def per_secret_regex_scan(secrets_by_kind: dict[str, set[str]], texts: dict[str, str]) -> list[str]:
    """The scan as it was (bench/soak.py before issue 18): one pattern per secret, every text."""
    found = []
    for kind, values in secrets_by_kind.items():
        for value in values:
            if not value:
                continue
            forms = {re.escape(value), re.escape(json.dumps(value)[1:-1])}
            pattern = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(forms) + r")(?![A-Za-z0-9])")
            for where, text in texts.items():
                if pattern.search(text):
                    found.append(f"{kind} in {where}")
    return found


@pytest.mark.parametrize(
    ("secret", "text"),
    [
        (PASSCODE, PASSCODE),
        (PASSCODE, f"passcode {PASSCODE} shown"),
        (PASSCODE, json.dumps({"passcode": PASSCODE})),
        (PASSCODE, f'{{"message": "reset done", "detail": "code={PASSCODE}&x=1"}}'),
        (PASSCODE, f"/api/resets/{PASSCODE}/passcode"),
        (PASSCODE, f"line one\n{PASSCODE}\nline three"),
        (PASSCODE, f"({PASSCODE})."),
        (PASSCODE, f"_{PASSCODE}_"),  # underscore is no letter or digit
        (TOKEN, f"Authorization: Bearer {TOKEN}"),
        (TOKEN, json.dumps({"headers": {"Authorization": f"Bearer {TOKEN}"}})),
        (ACCOUNT_KEY, f"AccountKey={ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1"),
        (ACCOUNT_KEY, json.dumps({"connection": f"AccountKey={ACCOUNT_KEY};"})),
        (QUOTED, json.dumps({"secret": QUOTED})),  # only its JSON-escaped form is in the text
        (QUOTED, f"raw {QUOTED} raw"),
        ("pässwört", json.dumps({"v": "pässwört"})),  # \u00e4 escapes (ensure_ascii)
        ("-dash-start", "x -dash-start y"),
    ],
)
def test_a_secret_is_found_in_any_context_it_stands_alone_in(secret: str, text: str) -> None:
    secrets = {"secret": {secret}}
    texts = {"logs": text}
    assert find_leaks(secrets, texts) == ["secret in logs"]
    assert per_secret_regex_scan(secrets, texts) == ["secret in logs"]


@pytest.mark.parametrize(
    ("secret", "text"),
    [
        (PASSCODE, f"a{PASSCODE}"),  # inside a longer token: a hex id, a base64 blob
        (PASSCODE, f"{PASSCODE}9"),
        (PASSCODE, f"deadbeef{PASSCODE}cafe"),
        (PASSCODE, PASSCODE.lower()),  # case matters
        (PASSCODE, PASSCODE[:-1]),
        (PASSCODE, "%58k7pQ2mZ"),  # URL-encoded forms are not looked for (nor were they before)
        (TOKEN, f"x{TOKEN}"),
        (TOKEN, TOKEN.replace("-", "%2D")),
        ("-dash-start", "x-dash-start"),  # the character before the secret is a letter
        ("", "anything"),  # an empty value is no secret
    ],
)
def test_a_secret_inside_a_longer_token_or_spelled_otherwise_is_not_found(secret: str, text: str) -> None:
    secrets = {"secret": {secret}}
    texts = {"logs": text}
    assert find_leaks(secrets, texts) == []
    assert per_secret_regex_scan(secrets, texts) == []


def test_every_kind_and_every_text_is_reported_once_per_value_found() -> None:
    secrets = {
        "GRAPH_TOKEN": {TOKEN},
        "function key": {"fk-not-present"},
        "passcode": {"11112222", "33334444", "55556666"},
    }
    texts = {"host logs": f"token {TOKEN} and 11112222 and 33334444", "events": '{"p": "33334444"}'}
    leaks = find_leaks(secrets, texts)
    assert sorted(leaks) == sorted(
        ["GRAPH_TOKEN in host logs", "passcode in host logs", "passcode in host logs", "passcode in events"]
    )
    assert leaks == per_secret_regex_scan(secrets, texts)


def test_a_secret_without_letters_or_digits_is_still_scanned() -> None:
    assert find_leaks({"odd": {"--"}}, {"t": "a -- b"}) == ["odd in t"]
    assert find_leaks({"odd": {"--"}}, {"t": "a--b"}) == []


ALPHABET = "ab1-_/+=\"\\ .é"


@settings(max_examples=400, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet=ALPHABET, max_size=6), max_size=5),
    text=st.text(alphabet=ALPHABET, max_size=60),
)
def test_finds_exactly_what_the_per_secret_regex_scan_found(secrets: list[str], text: str) -> None:
    planted = text + " " + " ".join(secrets[:2])  # some present, some maybe not
    by_kind = {"a": set(secrets[:3]), "b": set(secrets[2:])}
    texts = {"logs": planted, "events": json.dumps({"x": planted})}
    assert find_leaks(by_kind, texts) == per_secret_regex_scan(by_kind, texts)


def test_a_soak_sized_scan_takes_seconds() -> None:
    """14 MB of JSON log lines and 4,000 passcodes (the 5,000-request soak that took > 10 minutes)."""
    rng = random.Random(18)
    alphabet = string.ascii_letters + string.digits
    passcodes = {"".join(rng.choices(alphabet, k=8)) for _ in range(4000)}
    leaked = sorted(passcodes)[:3]
    lines = []
    size = 0
    while size < 14_000_000:
        line = json.dumps(
            {
                "time": "2026-11-30T02:14:10.778+00:00",
                "level": "INFO",
                "logger": "passcode_reset",
                "message": "function succeeded",
                "invocation_id": str(rng.getrandbits(128)),
                "device": "".join(rng.choices(string.hexdigits.lower(), k=32)),
                "duration_ms": rng.random() * 100,
            }
        )
        lines.append(line)
        size += len(line) + 1
    for number, passcode in enumerate(leaked):
        lines[(number + 1) * len(lines) // 4] += f' {{"passcode": "{passcode}"}}'
    text = "\n".join(lines)
    secrets = {"passcode": passcodes, "GRAPH_TOKEN": {TOKEN}}

    started = time.perf_counter()
    leaks = find_leaks(secrets, {"host logs": text, "events": text[: len(text) // 10]})
    elapsed = time.perf_counter() - started

    print(f"leak scan: {len(text) / 1e6:.1f} MB, {len(passcodes)} secrets, {elapsed:.2f} s")
    assert leaks.count("passcode in host logs") == 3
    assert elapsed < 30, "a sanity bound only; it takes a few seconds"
