"""The guardrail soak, short (bench/guardrail_soak.py; the long run is documented in
docs/operations.md): a runaway producer makes at most GUARDRAIL_MAX_ACTIONS_PER_HOUR action calls,
every other request is held, none is lost."""

from __future__ import annotations

import argparse
import asyncio
import json

from bench import guardrail_soak


def test_a_runaway_producer_makes_at_most_the_limit_of_action_calls() -> None:
    args = argparse.Namespace(requests=60, limit=5, timeout=120.0, seed=3, chart=None)
    result = asyncio.run(guardrail_soak.soak(args))
    assert result["actionCalls"] == 5, json.dumps(result)
    assert (result["submitted"], result["heldGuardrailTripped"], result["lost"]) == (5, 55, 0)
    assert result["ok"] is True
