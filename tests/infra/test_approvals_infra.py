"""docs/contract.md#approvals-guardrails-and-requesters in infra/: the PasscodeReset.Approve app role
and the guardrail alert over the app's outcome log records."""

from __future__ import annotations

from tests.infra import bicep

GRAPH = "app/graph.bicep"
ALERTS = "app/alerts.bicep"


def test_the_api_registration_has_the_approve_role() -> None:
    roles = {role["value"]: role for role in bicep.variable(bicep.parse(GRAPH), "apiAppRoles")}
    assert "PasscodeReset.Approve" in roles
    assert "/approval" in roles["PasscodeReset.Approve"]["description"]


def test_a_tripped_guardrail_raises_an_alert() -> None:
    template = bicep.parse(ALERTS)
    query = bicep.variable(template, "guardrailQuery")
    assert 'customDimensions.event) == "outcome"' in query
    assert 'customDimensions.reasonCode) == "guardrail_tripped"' in query
    rule = bicep.resource(template, "guardrailAlert")
    assert rule["kind"] == "LogAlert"
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["query"] == "guardrailQuery"
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    assert "ops approvals" in rule["properties"]["description"]
