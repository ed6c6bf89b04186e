// What an operator watches once the app is deployed: log search alert rules over the app's signals
// (shared/signals.py: traces whose message ends with their dimensions as JSON, or customDimensions once OpenTelemetry
// exports the logs) and the storage account's queue logs, an action group that mails them (only when an address is
// given), and the campaign workbook. Every alert has a runbook entry in docs/operations.md under its display name.
// Each query is a file in alerts/ (tests/test_monitoring.py checks that every query reading signals normalises their
// dimensions the one way and reads only names the app writes).

param location string = resourceGroup().location
param tags object = {}
@description('Application Insights component the app logs to (its signals are traces).')
param applicationInsightsName string
@description('Log Analytics workspace receiving the storage account\'s queue logs (StorageQueueLogs).')
param logAnalyticsWorkspaceId string
@description('Where alerts are mailed. Empty: no action group; the alerts still fire in the portal.')
param alertEmail string = ''
param actionGroupName string
@description('Prefix of the alert rules\' names.')
param alertNamePrefix string
@description('PRODUCT_UPGRADE_TRACKING_HOURS, a whole number: an upgrade running longer than half of it raises an alert.')
param trackingHours string
@description('Failed function invocations in 15 minutes above which an alert fires.')
@minValue(0)
param failedInvocationsThreshold int = 10
@description('Share (%) of an hour\'s ended upgrades that ended failed or expired, above which an alert fires.')
@minValue(0)
@maxValue(100)
param failedOutcomePercent int = 20
@description('Ended upgrades an hour needs before the failed-or-expired share counts (a single failure is not 100 %).')
@minValue(1)
param minimumEndedUpgrades int = 5
@description('Days before a Partner Center secret\'s recorded expiry from which an alert fires.')
@minValue(1)
param secretExpiryWarningDays int = 30

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) { // bicep-types: ignore (type not in ../shared/schemas/azure-types yet; checked against bicep-types-az, see infra/README.md)
  name: actionGroupName
  // Action groups are global resources.
  location: 'global'
  tags: tags
  properties: {
    // At most 12 characters: it names the sender of SMS and voice notifications.
    groupShortName: 'upgrades'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var appInsightsScope = applicationInsights.id
var alerts = [
  {
    name: 'poison-queue'
    displayName: 'Poison queue not empty'
    description: 'A request or tracking message ended in a poison queue after 5 failed attempts and is still there.'
    severity: 1
    scope: logAnalyticsWorkspaceId
    frequency: 'PT15M'
    window: 'P1D'
    query: loadTextContent('alerts/poison-queue.kql')
  }
  {
    name: 'failed-invocations'
    displayName: 'Failed invocations'
    description: 'More than ${failedInvocationsThreshold} function invocations failed in 15 minutes.'
    severity: 2
    scope: appInsightsScope
    frequency: 'PT5M'
    window: 'PT15M'
    query: replace(loadTextContent('alerts/failed-invocations.kql'), '__THRESHOLD__', string(failedInvocationsThreshold))
  }
  {
    name: 'failed-outcomes'
    displayName: 'Failed or expired outcomes'
    description: 'More than ${failedOutcomePercent} % of the upgrades that ended in the last hour ended failed or expired.'
    severity: 2
    scope: appInsightsScope
    frequency: 'PT15M'
    window: 'PT1H'
    query: replace(replace(loadTextContent('alerts/failed-outcomes.kql'), '__PERCENT__', string(failedOutcomePercent)), '__MINIMUM__', string(minimumEndedUpgrades))
  }
  {
    name: 'upgrade-running-long'
    displayName: 'Upgrade running long'
    description: 'An upgrade has been running for more than half of PRODUCT_UPGRADE_TRACKING_HOURS (${trackingHours} h).'
    severity: 3
    scope: appInsightsScope
    frequency: 'PT1H'
    window: 'PT2H'
    query: replace(loadTextContent('alerts/oldest-running.kql'), '__HOURS__', string(int(trackingHours) / 2))
  }
  {
    name: 'token-refused'
    displayName: 'Token refresh refused'
    description: 'Entra ID refused the Partner Center App+User refresh token: every App+User call fails until an admin consents again.'
    severity: 1
    scope: appInsightsScope
    frequency: 'PT15M'
    window: 'PT1H'
    query: loadTextContent('alerts/token-refused.kql')
  }
  {
    name: 'token-without-mfa'
    displayName: 'Token without MFA'
    description: 'The Partner Center App+User token carries no MFA claim: Partner Center refuses App+User calls without MFA.'
    severity: 2
    scope: appInsightsScope
    frequency: 'PT6H'
    window: 'P1D'
    query: loadTextContent('alerts/token-without-mfa.kql')
  }
  {
    name: 'secret-expiry'
    displayName: 'Key Vault secret near expiry'
    description: 'A Partner Center secret in Key Vault expires within ${secretExpiryWarningDays} days.'
    severity: 2
    scope: appInsightsScope
    frequency: 'PT6H'
    window: 'P1D'
    query: replace(loadTextContent('alerts/secret-expiry.kql'), '__DAYS__', string(secretExpiryWarningDays))
  }
]

// Each query returns rows only when its condition holds: the rule fires when it returns any.
resource alertRules 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [ // bicep-types: ignore (type not in ../shared/schemas/azure-types yet; checked against bicep-types-az, see infra/README.md)
  for alert in alerts: {
    name: '${alertNamePrefix}-${alert.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: 'Product upgrades: ${alert.displayName}'
      description: alert.description
      severity: alert.severity
      enabled: true
      scopes: [
        alert.scope
      ]
      evaluationFrequency: alert.frequency
      windowSize: alert.window
      criteria: {
        allOf: [
          {
            query: alert.query
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
        actionGroups: empty(alertEmail) ? [] : [actionGroup.id]
      }
    }
  }
]

// The campaign workbook (Azure Monitor workbook), shared in the resource group, reading Application Insights.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = { // bicep-types: ignore (type not in ../shared/schemas/azure-types yet; checked against bicep-types-az, see infra/README.md)
  name: guid(resourceGroup().id, applicationInsightsName, 'product-upgrade-campaigns')
  location: location
  tags: union(tags, {
    'hidden-title': 'Product upgrade campaigns'
  })
  kind: 'shared'
  properties: {
    displayName: 'Product upgrade campaigns'
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: applicationInsights.id
    serializedData: string(union(loadJsonContent('workbook.json'), {
      fallbackResourceIds: [
        applicationInsights.id
      ]
    }))
  }
}

output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
output alertRuleNames array = [for (alert, i) in alerts: alertRules[i].name]
output workbookId string = workbook.id
