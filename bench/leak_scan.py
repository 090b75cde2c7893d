"""Secrets in logs and events: one pass over each text, however many secrets there are.

A secret counts as found where it appears verbatim or JSON-escaped, as a whole token: no ASCII
letter or digit right before or after it (an 8-character passcode may otherwise turn up by chance
inside some long hexadecimal id).

The scan used to compile one regex per secret and search every text with each: O(secrets x text),
more than 10 minutes for the 4,000 passcodes and 14 MB of host logs of a 5,000-request soak. Now
each text is cut once into its maximal runs of ASCII letters and digits, and a secret is looked up
by the first such run inside it: at a match, the text's run starting there is exactly that run (the
character before it is not alphanumeric, in the secret or by the token rule; the one after it is
not alphanumeric either, or the secret would have a longer first run). Only secrets whose first
run occurs in the text are compared in place, and only where that run occurs. A secret with no
letter or digit at all keeps the regex search.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_RUN = re.compile(r"[A-Za-z0-9]+")


def _is_alnum(character: str) -> bool:
    return character.isascii() and character.isalnum()


@dataclass(frozen=True)
class _Form:
    """One spelling of a secret, and where its first alphanumeric run starts inside it."""

    text: str
    run_offset: int


def forms_of(value: str) -> set[str]:
    """The spellings that count: verbatim and JSON-escaped (as inside a JSON string)."""
    return {value, json.dumps(value)[1:-1]}


def found_in(values: Iterable[str], text: str) -> set[str]:
    """The values that occur in ``text`` as a whole token, in any of their forms."""
    by_first_run: dict[str, list[tuple[_Form, str]]] = defaultdict(list)
    without_run: set[str] = set()
    for value in values:
        if not value:
            continue
        for spelling in forms_of(value):
            first_run = _RUN.search(spelling)
            if first_run is None:
                without_run.add(value)
            else:
                by_first_run[first_run.group()].append((_Form(spelling, first_run.start()), value))
    found = {value for value in without_run if _regex_search(value, text)}
    present = by_first_run.keys() & set(_RUN.findall(text))
    if not present:
        return found
    for run in _RUN.finditer(text):
        candidates = by_first_run.get(run.group()) if run.group() in present else None
        for form, value in candidates or ():
            if value not in found and _occurs_at(text, form, run.start() - form.run_offset):
                found.add(value)
    return found


def _occurs_at(text: str, form: _Form, start: int) -> bool:
    end = start + len(form.text)
    return (
        start >= 0
        and text.startswith(form.text, start)
        and (start == 0 or not _is_alnum(text[start - 1]))
        and (end == len(text) or not _is_alnum(text[end]))
    )


def _regex_search(value: str, text: str) -> bool:
    """The token rule as a regex, for a secret without letters or digits (never in practice)."""
    alternatives = "|".join(re.escape(form) for form in forms_of(value))
    return re.search(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", text) is not None


def find_leaks(secrets_by_kind: Mapping[str, Iterable[str]], texts: Mapping[str, str]) -> list[str]:
    """`kind in where` for every secret value found (verbatim or JSON-escaped, as a whole token)
    in a text: one entry per value and text, in the order of ``secrets_by_kind`` and ``texts``."""
    values_by_kind = {kind: [value for value in values if value] for kind, values in secrets_by_kind.items()}
    every_value = {value for values in values_by_kind.values() for value in values}
    found = {where: found_in(every_value, text) for where, text in texts.items()}
    return [
        f"{kind} in {where}"
        for kind, values in values_by_kind.items()
        for value in values
        for where in texts
        if value in found[where]
    ]
