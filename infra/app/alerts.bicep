// Log alert rules over Application Insights, with an optional e-mail action group.
//
// Why log alerts and not storage metrics: the storage QueueMessageCount metric is per account,
// with no per-queue dimension, so it cannot tell a poison queue from the busy request queue. The
// app drains the poison queues itself (docs/contract.md#outcome-events: a poisoned request ends as
// failed/retries_exhausted), so "poison queue not empty" is observed as "a message reached a
// poison queue": the host's MaxDequeueCount warning or the app's retries_exhausted outcome.
//
// The queries assume the telemetry contract in docs/deploy.md: the app's log records carry
// customDimensions event ("outcome" for published outcome events), status, reasonCode and
// platform, and Graph calls are recorded as dependency telemetry. sum(itemCount) keeps counts
// right under sampling.
param namePrefix string
param actionGroupName string
param location string
param tags object = {}
param applicationInsightsName string

@description('E-mail receiver of the action group; empty creates no action group.')
param alertEmailAddress string = ''

@minValue(1)
@maxValue(100)
param failureRateThresholdPercent int = 20

@minValue(1)
param failureRateMinimumOutcomes int = 5

@minValue(1)
param graphThrottlingThreshold int = 10

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmailAddress)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'pwreset'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupIds = empty(alertEmailAddress) ? [] : [
  actionGroup.id
]

// Host warning: "Message has reached MaxDequeueCount of 5. Moving message to queue '<queue>-poison'."
// App outcome: reasonCode retries_exhausted, published by the poison handler (and when a request
// outlives REQUEST_DEADLINE_SECONDS, docs/decisions/0005, which deserves the same attention).
var poisonQuery = '''
union isfuzzy=true traces, customEvents
| where (message has "MaxDequeueCount" and message has "-poison" and not(message has "-eventgrid-poison"))
    or tostring(customDimensions.reasonCode) == "retries_exhausted"
| project timestamp, message, reasonCode = tostring(customDimensions.reasonCode), operation_Id
'''

// Final statuses of docs/contract.md#outcome-events; failures are failed and timed_out (rejected and unsupported
// are policy answers, not faults). {0} is the minimum volume before a rate means anything.
var failureRateQuery = format('''
union isfuzzy=true traces, customEvents
| where tostring(customDimensions.event) == "outcome"
| extend status = tostring(customDimensions.status)
| where status in ("completed", "failed", "unsupported", "rejected", "dry_run", "timed_out")
| summarize finals = sum(itemCount), failures = sumif(itemCount, status in ("failed", "timed_out"))
| where finals >= {0}
| extend failureRatePercent = round(100.0 * failures / finals, 1)
''', failureRateMinimumOutcomes)

// Intune throttles per app and tenant (200 POST / 2,000 requests per 20 s); sustained 429s mean
// the budget is shared with another app or maximumInstanceCount is too high.
var throttlingQuery = '''
dependencies
| where target has "graph.microsoft.com" or data has "graph.microsoft.com"
| where resultCode == "429"
| summarize throttled = sum(itemCount)
'''

// Event Grid delivery (docs/contract.md#event-grid-delivery): an outbox event the topic refused
// maxDequeueCount times. The app logs customDimensions event "eventgrid_undelivered" and counts
// passcode_reset.eventgrid.deliveries{result=undelivered}, then retries it after EVENTGRID_RETRY_SECONDS.
var eventGridQuery = '''
union isfuzzy=true traces, customEvents
| where tostring(customDimensions.event) == "eventgrid_undelivered"
| project timestamp, message, eventId = tostring(customDimensions.eventId), requestId = tostring(customDimensions.requestId)
'''

// Guardrails (docs/contract.md#guardrails): a request held because the hourly limit of action calls
// was reached. The app logs its outcome (customDimensions event "outcome", status awaiting_approval,
// reasonCode guardrail_tripped) and counts passcode_reset.guardrail.tripped.
var guardrailQuery = '''
union isfuzzy=true traces, customEvents
| where tostring(customDimensions.event) == "outcome"
| where tostring(customDimensions.reasonCode) == "guardrail_tripped"
| project timestamp, message, requestId = tostring(customDimensions.requestId)
'''

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poison'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Passcode reset: message reached a poison queue (retries exhausted)'
    description: 'A request or follow-up message failed maxDequeueCount times and was moved to its -poison queue, or a request ran out of retries (REQUEST_DEADLINE_SECONDS); it ends as failed/retries_exhausted. Inspect the exceptions of the failing invocations.'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource failureRateAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-failure-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Passcode reset: final-failure rate'
    description: 'More than ${failureRateThresholdPercent}% of final outcomes in the last hour were failed or timed_out (at least ${failureRateMinimumOutcomes} outcomes).'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: failureRateQuery
          metricMeasureColumn: 'failureRatePercent'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: failureRateThresholdPercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource throttlingAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-graph-throttling'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Passcode reset: Microsoft Graph throttling (429)'
    description: 'Graph answered 429 more than ${graphThrottlingThreshold} times in 15 minutes. Another app may share the Intune budget, or maximumInstanceCount is too high.'
    severity: 3
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: throttlingQuery
          metricMeasureColumn: 'throttled'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: graphThrottlingThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource eventGridAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-eventgrid'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Passcode reset: Event Grid delivery failing'
    description: 'Outcome events could not be delivered to the Event Grid topic after every retry (topic down, role EventGrid Data Sender missing, endpoint wrong). The results queue is not affected; the app keeps retrying every EVENTGRID_RETRY_SECONDS. Check the warnings "Event Grid delivery failed" for the HTTP status.'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: eventGridQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource guardrailAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-guardrail'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Passcode reset: guardrail tripped'
    description: 'Requests are held for approval because GUARDRAIL_MAX_ACTIONS_PER_HOUR (or the per-requester limit) action calls were made in the last hour: a runaway upstream system, or a real surge. Nothing is lost. List them with python -m ops approvals; approve the legitimate ones (python -m ops approve REQUEST_ID) or let them expire.'
    severity: 2
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: guardrailQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

output alertRuleNames array = [
  poisonAlert.name
  eventGridAlert.name
  guardrailAlert.name
  failureRateAlert.name
  throttlingAlert.name
]
