"""Issue 12's rules, pure: IMEI forms (docs/contract.md#device-resolution), the secret of an action
result whatever its `@odata.type` (#passcode-reveal), and which answers to an action POST leave its
outcome unknown (#retries-and-unknown-outcomes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.core.device import (
    ActionResult,
    imei_lookup_forms,
    imei_matches,
    luhn_check_digit,
    our_action_result,
    revealable_secret,
)
from shared.core.errors import action_answer_kind
from shared.core.platforms import Action

# ------------------------------------------------------------------------------------ IMEI forms

IMEI_CASES = [
    # (stored imei, requested imei, match?)
    ("353094184645589", "353094184645589", True),  # same 15 digits
    ("35 309418 464558 9", "353094184645589", True),  # Apple's grouping (this check digit fails Luhn: no matter)
    ("35 309418 464558 9", "35309418464558", True),  # 14-digit request, 15-digit stored
    ("35490211367520", "354902113675200", True),  # 14 stored, 15 requested
    ("35490211367520", "354902113675209", True),  # any check digit: Luhn is never checked
    ("35490211367520", "3549021136752012", True),  # IMEISV: first 14 digits
    ("354902113675200", "3549021136752099", True),
    ("3549021136752012", "35490211367520", True),  # stored IMEISV
    ("3549021136752012", "3549021136752099", True),  # two software versions of one IMEI
    ("353094184645589", "353094184645580", False),  # 15 vs 15: every digit counts
    ("35490211367520", "35490211367521", False),
    ("35490211367520", "354902113675", False),  # too short to be an IMEI
    (None, "35490211367520", False),
    ("", "35490211367520", False),
    ("3549021136752", "35490211367520", False),  # 13 stored digits are no IMEI
]


@pytest.mark.parametrize(("stored", "requested", "expected"), IMEI_CASES)
def test_imei_match_rule(stored: str | None, requested: str, expected: bool) -> None:
    assert imei_matches(stored, requested) is expected


def test_luhn_check_digit_of_known_imeis() -> None:
    assert luhn_check_digit("49015420323751") == "8"  # 490154203237518, the textbook example
    assert luhn_check_digit("35217892206159") == "1"  # the fleet's kiosk, 352178922061591


@pytest.mark.parametrize(
    ("requested", "forms"),
    [
        ("353094184645589", ["353094184645589", "35 309418 464558 9", "35309418464558"]),
        ("35490211367520", ["35490211367520", "354902113675200", "35 490211 367520 0"]),
        ("3549021136752012", ["3549021136752012", "354902113675200", "35 490211 367520 0", "35490211367520"]),
    ],
)
def test_imei_lookup_forms_most_likely_first(requested: str, forms: list[str]) -> None:
    assert imei_lookup_forms(requested) == forms
    assert all(imei_matches(form, requested) for form in forms)  # each form would pass the check


# ------------------------------------------------------------------------------------ secrets

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


RESET = {"actionName": "resetPasscode", "actionState": "done", "startDateTime": "2026-11-25T10:00:00Z"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"@odata.type": "#microsoft.graph.resetPasscodeActionResult", "passcode": "A1b2C3d4"},
         {"passcode": "A1b2C3d4", "unlockPin": None}),  # '#' type
        ({"@odata.type": "microsoft.graph.resetPasscodeActionResult", "passcode": "A1b2C3d4"},
         {"passcode": "A1b2C3d4", "unlockPin": None}),  # bare type (Microsoft's examples)
        ({"unlockPin": "123456"}, {"passcode": None, "unlockPin": "123456"}),  # no type at all
        ({"UnlockPin": "123456"}, {"passcode": None, "unlockPin": "123456"}),  # member name in another case
        ({"passcode": None, "unlockPin": 123456}, {"passcode": None, "unlockPin": None}),  # not text: no secret
        ({"passcode": ""}, {"passcode": None, "unlockPin": None}),
        ({}, {"passcode": None, "unlockPin": None}),
    ],
)
def test_action_result_secrets_whatever_the_odata_type(
    entry: dict[str, object], expected: dict[str, str | None]
) -> None:
    result = ActionResult.from_graph({**RESET, **entry})
    assert {"passcode": result.passcode, "unlockPin": result.unlock_pin} == expected
    assert "A1b2C3d4" not in repr(result) and "123456" not in repr(result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T10:00:00Z", T0),
        ("2026-11-25T10:00:00.1234567Z", T0 + timedelta(microseconds=123456)),  # Graph's 7 digits
        ("2026-11-25T11:00:00+01:00", T0),
        ("2026-11-25T10:00:00", T0),  # no offset: UTC
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),  # Graph's "never"
        ("yesterday", None),
        ("", None),
        (None, None),
        (1764064800, None),
    ],
)
def test_action_result_times(value: object, expected: datetime | None) -> None:
    result = ActionResult.from_graph({**RESET, "startDateTime": value, "lastUpdatedDateTime": value})
    assert result.started_at == expected and result.last_updated_at == expected
    if expected is not None:
        assert result.started_at is not None and result.started_at.tzinfo is not None


def test_action_result_name_and_state_as_sent() -> None:
    assert ActionResult.from_graph(RESET).action_name == "resetPasscode"
    assert ActionResult.from_graph({**RESET, "actionState": "Done"}).state == "Done"  # lifecycle lowers it
    assert ActionResult.from_graph({**RESET, "actionState": "unknownFutureValue"}).state == "unknownFutureValue"
    assert ActionResult.from_graph({"actionState": None}).state == "none"
    assert ActionResult.from_graph({}).action_name == ""


@pytest.mark.parametrize(
    ("name", "passcode", "pin", "expected"),
    [
        ("resetPasscode", "A1b2C3d4", None, ("passcode", "A1b2C3d4")),
        ("ResetPasscode", "A1b2C3d4", None, ("passcode", "A1b2C3d4")),
        ("remotelock", None, "123456", ("unlockPin", "123456")),
        ("remoteLock", None, None, None),  # Intune hid the PIN (30 days, or a later action)
        ("resetPasscode", None, None, None),  # iOS remove passcode
        ("remoteLock", "A1b2C3d4", None, None),  # a passcode on a lock result is not its PIN
    ],
)
def test_revealable_secret_follows_the_action(
    name: str, passcode: str | None, pin: str | None, expected: tuple[str, str] | None
) -> None:
    result = ActionResult(name, "pending", T0, T0, passcode=passcode, unlock_pin=pin)
    assert revealable_secret(result) == expected


@pytest.mark.parametrize("name", ["remoteLock", "RemoteLock", "remotelock", "REMOTELOCK"])
def test_our_action_result_matches_the_action_name_in_any_case(name: str) -> None:
    results = [ActionResult(name, "pending", T0 + timedelta(seconds=5), T0, unlock_pin="123456")]
    found = our_action_result(results, Action.REMOTE_LOCK, T0, timedelta(seconds=30))
    assert found is not None and found.unlock_pin == "123456"
    assert our_action_result(results, Action.RESET_PASSCODE, T0, timedelta(seconds=30)) is None


def test_secrets_never_show_in_a_result_repr() -> None:
    text = repr(ActionResult("remoteLock", "done", T0, T0, passcode="A1b2C3d4", unlock_pin="123456"))
    assert "A1b2C3d4" not in text and "123456" not in text


# ------------------------------------------------------------------------------------ action answers


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (204, "accepted"), (200, "accepted"),
        (400, "refused"), (401, "refused"), (403, "refused"), (404, "refused"),
        (429, "not_taken"),
        (500, "unknown"), (502, "unknown"), (503, "unknown"), (504, "unknown"), (408, "unknown"),
        (409, "unknown"), (405, "unknown"), (507, "unknown"),
    ],
)
def test_only_2xx_400_401_403_404_and_429_are_known_outcomes_of_an_action_post(status: int, kind: str) -> None:
    assert action_answer_kind(status) == kind
