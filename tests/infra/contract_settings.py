"""The settings contract the templates must satisfy, copied from docs/contract.md#settings
(and #authentication-and-roles).

The table is restated here as data: one entry per setting, with the contract's default as the app
reads it from the environment (a string), or None where the contract gives none. When the contract
or shared/settings.py gains a setting, add it here and the infra tests say what the template is
missing; tests/unit/test_docs.py keeps this data and the table in docs/contract.md equal.
"""

from __future__ import annotations

# docs/contract.md#settings, in table order.
CONTRACT_SETTINGS: dict[str, str | None] = {
    "AzureWebJobsStorage": None,
    "RESET_REQUESTS_QUEUE": "passcode-reset-requests",
    "RESET_RESULTS_QUEUE": "passcode-reset-results",
    "RESET_FOLLOWUPS_QUEUE": "passcode-reset-followups",
    "RESET_LEDGER_TABLE": "PasscodeResets",
    "GRAPH_BASE_URL": "https://graph.microsoft.com",
    "GRAPH_TOKEN": None,
    "AZURE_CLIENT_ID": None,
    "CONFIRM_FIRST_CHECK_SECONDS": "60",
    "CONFIRM_TIMEOUT_SECONDS": "86400",
    "RESET_COOLDOWN_SECONDS": "900",
    "ALLOW_PASSCODE_REVEAL": "false",
}

# docs/contract.md#http-api: "When App Service Authentication is enabled (AUTH_REQUIRE_ROLES=true) ...".
CONTRACT_AUTH_SETTINGS: dict[str, str | None] = {
    "AUTH_REQUIRE_ROLES": "false",
}

# Read by shared/settings.py; listed in the contract's table too.
CODE_ONLY_SETTINGS: dict[str, str | None] = {
    "REQUEST_DEADLINE_SECONDS": "3600",
    "GRAPH_POST_BUDGET": "200",
    "GRAPH_REQUEST_BUDGET": "2000",
    "GRAPH_BUDGET_WINDOW_SECONDS": "20",
    # The fallback share of the shared budget (docs/decisions/0013-shared-graph-budget.md): the template
    # sets its own parameter graphBudgetInstances (4), deliberately not maximumInstanceCount
    # (test_resource_graph.py).
    "GRAPH_BUDGET_INSTANCES": None,
}

# docs/contract.md#event-grid-delivery: off unless main.bicep's eventGridEnabled creates the topic.
CONTRACT_EVENTGRID_SETTINGS: dict[str, str | None] = {
    "EVENTGRID_TOPIC_ENDPOINT": None,
    "EVENTGRID_TOPIC_KEY": None,
    "EVENTGRID_RETRY_SECONDS": "300",
}

# docs/contract.md#batches: the batch queue (its binding uses %RESET_BATCHES_QUEUE%, so it must be set).
CONTRACT_BATCH_SETTINGS: dict[str, str | None] = {
    "RESET_BATCHES_QUEUE": "passcode-reset-batches",
}

# Local simulator only: the app refuses it unless GRAPH_BASE_URL is a loopback http URL.
NEVER_IN_AZURE = frozenset({"GRAPH_TOKEN", "EVENTGRID_TOPIC_KEY"})

# In Azure the connection string is replaced by the identity-based form (no key anywhere).
IDENTITY_STORAGE_SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "<managed identity client id>",
    "AzureWebJobsStorage__blobServiceUri": "<blob endpoint>",
    "AzureWebJobsStorage__queueServiceUri": "<queue endpoint>",
    "AzureWebJobsStorage__tableServiceUri": "<table endpoint>",
}

# Platform settings the Functions host and the Azure Monitor exporter read.
PLATFORM_SETTINGS = frozenset({
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
})

# docs/contract.md#approvals-guardrails-and-requesters (empty lists: no default to compare).
CONTRACT_APPROVAL_SETTINGS: dict[str, str | None] = {
    "APPROVAL_REQUIRED": None,
    "APPROVAL_TIMEOUT_SECONDS": "86400",
    "GUARDRAIL_MAX_ACTIONS_PER_HOUR": "100",
    "GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR": "0",
    "ALLOWED_REQUESTERS": None,
}

ALL_APP_SETTINGS: dict[str, str | None] = {
    **CONTRACT_SETTINGS, **CONTRACT_AUTH_SETTINGS, **CODE_ONLY_SETTINGS, **CONTRACT_EVENTGRID_SETTINGS,
    **CONTRACT_APPROVAL_SETTINGS, **CONTRACT_BATCH_SETTINGS,
}
