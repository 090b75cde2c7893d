"""The optional Event Grid topic of docs/contract.md#event-grid-delivery: CloudEvents input, Entra ID
only, the app's identity as EventGrid Data Sender, an optional webhook subscription with retries and
dead-lettering, the app setting, the outbox queues and the alert."""

from __future__ import annotations

from tests.infra import bicep

MAIN = "main.bicep"
EVENTGRID = "app/eventgrid.bicep"
API = "app/api.bicep"
ALERTS = "app/alerts.bicep"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def role_id(template: bicep.Template, variable: str) -> str:
    call = bicep.function_call(bicep.variable(template, variable), "subscription_resource_id")
    assert call is not None and call["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    return str(call["resource_name_1"])


def test_the_topic_is_off_by_default_and_created_by_one_switch() -> None:
    main = bicep.parse(MAIN)
    assert bicep.param_default(main, "eventGridEnabled") is False
    assert bicep.module_condition(main, "eventGrid") == "eventGridEnabled"
    assert bicep.module_path(main, "eventGrid") == "app/eventgrid.bicep"


def test_the_topic_takes_cloudevents_and_entra_id_only() -> None:
    topic = bicep.resource(bicep.parse(EVENTGRID), "topic")
    properties = topic["properties"]
    assert properties["inputSchema"] == "CloudEventSchemaV1_0"
    assert properties["disableLocalAuth"] is True
    assert properties["minimumTlsVersionAllowed"] == "1.2"
    assert topic["identity"] == {"type": "SystemAssigned"}


def test_the_apps_identity_is_eventgrid_data_sender_on_the_topic() -> None:
    template = bicep.parse(EVENTGRID)
    assignment = bicep.resource(template, "dataSender")
    assert assignment["scope"] == "topic"
    assert assignment["properties"]["principalId"] == "publisherPrincipalId"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    assert role_id(template, assignment["properties"]["roleDefinitionId"]) == EVENTGRID_DATA_SENDER
    passed = bicep.module(bicep.parse(MAIN), "eventGrid")["params"]["publisherPrincipalId"]
    assert bicep.accessor_chain(passed) == ["identity", "outputs", "principalId"]


def test_the_app_gets_the_topic_endpoint_only_when_the_topic_exists() -> None:
    passed = bicep.module(bicep.parse(MAIN), "api")["params"]["eventGridTopicEndpoint"]
    operands = passed["operator"]["operands"]
    assert operands["condition"] == "eventGridEnabled" and operands["false_value"] == ""
    assert bicep.accessor_chain(operands["true_value"]) == ["eventGrid", "outputs", "endpoint"]
    settings = {entry["name"]: entry["value"] for entry in bicep.variable(bicep.parse(API), "appSettings")}
    assert settings["EVENTGRID_TOPIC_ENDPOINT"] == "eventGridTopicEndpoint"
    assert "EVENTGRID_TOPIC_KEY" not in settings
    output = bicep.parse(EVENTGRID)["outputs"]["endpoint"]
    assert bicep.accessor_chain(output["value"]) == ["topic", "properties", "endpoint"]


def test_the_webhook_subscription_is_optional_retried_and_dead_lettered() -> None:
    template = bicep.parse(EVENTGRID)
    condition = bicep.resource_condition(template, "webhookSubscription")
    tested = bicep.function_call(condition["operator"]["operands"]["bool_value"], "empty")
    assert tested == {"item_to_test": "webhookUrl"}
    assert bicep.param_default(template, "webhookUrl") == ""
    assert any(d["type"] == "secure" for d in template["parameters"]["webhookUrl"]["decorators"])
    properties = bicep.resource(template, "webhookSubscription")["properties"]
    assert properties["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    assert properties["destination"]["endpointType"] == "WebHook"
    assert properties["destination"]["properties"]["endpointUrl"] == "webhookUrl"
    assert properties["retryPolicy"] == {
        "maxDeliveryAttempts": "maxDeliveryAttempts", "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes",
    }
    assert bicep.param_default(template, "maxDeliveryAttempts") == 30
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    destination = dead_letter["deadLetterDestination"]
    assert destination["endpointType"] == "StorageBlob"
    assert bicep.accessor_chain(destination["properties"]["resourceId"]) == ["storage", "id"]
    assert bicep.accessor_chain(destination["properties"]["blobContainerName"]) == ["deadLetterContainer", "name"]


def test_the_topic_may_write_dead_letters_and_the_container_is_private() -> None:
    template = bicep.parse(EVENTGRID)
    container = bicep.resource(template, "deadLetterContainer")
    assert container["properties"]["publicAccess"] == "None"
    writer = bicep.resource(template, "deadLetterWriter")
    assert writer["scope"] == "deadLetterContainer"
    assert bicep.accessor_chain(writer["properties"]["principalId"]) == ["topic", "identity", "principalId"]
    assert role_id(template, writer["properties"]["roleDefinitionId"]) == STORAGE_BLOB_DATA_CONTRIBUTOR


def test_undelivered_events_raise_an_alert() -> None:
    template = bicep.parse(ALERTS)
    query = bicep.variable(template, "eventGridQuery")
    assert "eventgrid_undelivered" in query
    alert = bicep.resource(template, "eventGridAlert")
    assert alert["properties"]["criteria"]["allOf"][0]["query"] == "eventGridQuery"
