// Role assignments by built-in role definition id, each on the narrowest scope Azure allows for what it is for.
// The Function App's user-assigned identity gets exactly what it uses; the deploying user (principalId,
// optional) gets what an operator needs to run the app. infra/README.md lists every grant and its scope.

param storageAccountName string
param appInsightsName string
param keyVaultName string
param refreshTokenSecretName string
@description('Queue the queue trigger reads and deferred requests are re-sent to (PRODUCT_UPGRADE_REQUESTS_QUEUE).')
param requestsQueueName string
@description('Queue of scheduled status checks: read by the tracker\'s trigger, written by the scheduler.')
param trackingQueueName string
@description('Queue the results are written to (output binding).')
param resultsQueueName string
@description('Queue the outcomes of tracked upgrades are written to.')
param outcomesQueueName string
@description('Poison queue of the requests queue: the Functions host moves a message there after maxDequeueCount attempts.')
param requestsPoisonQueueName string
@description('Poison queue of the tracking queue.')
param trackingPoisonQueueName string
@description('The upgrades table (PRODUCT_UPGRADE_TABLE).')
param tableName string
@description('Grant Key Vault Secrets Officer on the refresh-token secret; the secret must exist by then.')
param grantRefreshTokenRotation bool = false
@description('Principal (object) id of the Function App\'s user-assigned managed identity.')
param managedIdentityPrincipalId string
@description('Object id of the deploying user; empty for none.')
param userPrincipalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'
@description('Grant the deploying user Key Vault Secrets Officer on the vault, to put the secrets in. Off by default.')
param grantUserSecretsOfficer bool = false

// Built-in role definition ids (the same in every Azure cloud).
// Storage Blob Data Owner: host storage (AzureWebJobsStorage: the host creates its containers, holds leases, keeps
// keys) and the Flex Consumption deployment container. The host needs the account scope (it creates containers).
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Queue Data Reader: a queue trigger peeks and counts messages (also the scale controller's view).
var storageQueueDataReaderRoleId = '19e7f393-937e-4f77-808e-94535e297925'
// Storage Queue Data Message Processor: a queue trigger receives and deletes messages.
var storageQueueDataMessageProcessorRoleId = '8a0f0c08-91a1-4084-bc3d-661d67233fed'
// Storage Queue Data Message Sender: output binding, scheduler and the host's poison moves add messages.
var storageQueueDataMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Storage Queue Data Contributor: the deploying user's queue access for operating the app.
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Storage Table Data Contributor: the upgrades table, on that table only.
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Monitoring Metrics Publisher: Entra-authenticated telemetry to Application Insights.
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// Key Vault Secrets User: read the three Partner Center secrets.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Key Vault Secrets Officer: write secrets; scoped to the refresh-token secret (rotation) for the app,
// to the vault for the operator who puts the secrets in (only while grantUserSecretsOfficer is on).
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

// The app identity's queue roles, each on one queue. Both trigger queues are also written to: deferred
// requests go back to the requests queue, the scheduler sends the next status check to the tracking queue.
var queueGrants = [
  {
    queue: requestsQueueName
    roleId: storageQueueDataReaderRoleId
  }
  {
    queue: requestsQueueName
    roleId: storageQueueDataMessageProcessorRoleId
  }
  {
    queue: requestsQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
  {
    queue: trackingQueueName
    roleId: storageQueueDataReaderRoleId
  }
  {
    queue: trackingQueueName
    roleId: storageQueueDataMessageProcessorRoleId
  }
  {
    queue: trackingQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
  {
    queue: resultsQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
  {
    queue: outcomesQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
  {
    queue: requestsPoisonQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
  {
    queue: trackingPoisonQueueName
    roleId: storageQueueDataMessageSenderRoleId
  }
]

var hasUser = !empty(userPrincipalId)

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource refreshTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: keyVault
  name: refreshTokenSecretName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

// One reference per grant (an existing resource may be declared more than once), so that each assignment
// below can take its queue as scope.
resource grantedQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [
  for grant in queueGrants: {
    parent: queueService
    name: grant.queue
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource upgradesTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: tableName
}

// The Function App's identity.

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, managedIdentityPrincipalId, storageBlobDataOwnerRoleId)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource queueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (grant, i) in queueGrants: {
    name: guid(grantedQueues[i].id, managedIdentityPrincipalId, grant.roleId)
    scope: grantedQueues[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.roleId)
      principalId: managedIdentityPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(upgradesTable.id, managedIdentityPrincipalId, storageTableDataContributorRoleId)
  scope: upgradesTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, managedIdentityPrincipalId, monitoringMetricsPublisherRoleId)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, managedIdentityPrincipalId, keyVaultSecretsUserRoleId)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource refreshTokenOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantRefreshTokenRotation) {
  name: guid(refreshTokenSecret.id, managedIdentityPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: refreshTokenSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The deploying user (optional): send and read queue messages; put the secrets into the vault only while
// grantUserSecretsOfficer is on. Turning it off later does not remove an assignment already made (deployments
// never delete): infra/README.md shows the `az role assignment delete` that does.

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasUser && grantUserSecretsOfficer) {
  name: guid(keyVault.id, userPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasUser) {
  name: guid(storageAccount.id, userPrincipalId, storageQueueDataContributorRoleId)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
