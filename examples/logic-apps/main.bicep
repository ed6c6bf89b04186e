// The example Logic Apps (Consumption) beside a deployed function app. Optional: azd up does not deploy
// them. Deploy into the app's resource group, with names from azd's environment (`azd env get-values`):
//   az deployment group create -g "$AZURE_RESOURCE_GROUP" -f examples/logic-apps/main.bicep \
//     -p functionAppName="$AZURE_FUNCTION_APP_NAME" storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
//     -p notifyUrl='https://crm.example.com/hooks/upgrades' \
//     -p integrationKey="$INTEGRATION_KEY" \
//     -p teamsWebhookUrl='<your Teams channel webhook URL>' operatorKey="$OPERATOR_KEY"
// The campaign-summary workflow is deployed only when teamsWebhookUrl is given; it reads a campaign's summary, a
// ledger route, with the operator key.
// The workflows reach the storage queues with their own system-assigned identities (storage is identity-only),
// and the function with the integration key (infra/keys.bicep, deployed first): a function key that opens create,
// eligibility and status only, never a host key, which would open every route of the app (docs/security.md).
// The outcomes workflow remembers the outcomeId of each outcome the CRM was told in a table of its own (created
// here), so a second copy of an outcome (queues deliver at least once) is not told twice.

@description('Name of the function app (azd output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Name of the app\'s storage account (azd output AZURE_STORAGE_ACCOUNT_NAME).')
param storageAccountName string

@description('Where the workflows post outcomes: your CRM\'s webhook URL (it may carry a key, hence secure).')
@secure()
param notifyUrl string

@description('The integration key infra/keys.bicep set on the create, eligibility and status functions.')
@secure()
@minLength(32)
param integrationKey string

@description('Where the campaign-summary workflow posts each hour: a Teams channel\'s webhook URL (Workflows, "Post to a channel when a webhook request is received"); empty: that workflow is not deployed.')
@secure()
param teamsWebhookUrl string = ''

@description('The operator key infra/keys.bicep set on the ledger\'s routes: the campaign-summary workflow reads the summary with it (needed with teamsWebhookUrl).')
@secure()
param operatorKey string = ''

@description('PRODUCT_UPGRADE_REQUESTS_QUEUE of the app.')
param requestsQueueName string = 'product-upgrade-requests'

@description('PRODUCT_UPGRADE_OUTCOMES_QUEUE of the app.')
param outcomesQueueName string = 'product-upgrade-outcomes'

@description('Table where the outcomes workflow remembers the outcomeIds the CRM was told (created here).')
param toldTableName string = 'upgradeoutcomestold'

param location string = resourceGroup().location

param tags object = {}

// Built-in role definition ids (the same in every Azure cloud).
// Storage Queue Data Message Sender: put messages (the enqueue workflow, on the requests queue only).
var queueMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Storage Queue Data Message Processor: peek, receive and delete (the outcomes workflow, on the outcomes queue only).
var queueMessageProcessorRoleId = '8a0f0c08-91a1-4084-bc3d-661d67233fed'
// Storage Table Data Contributor: read and insert entities (the outcomes workflow, on its own table only).
var tableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource requestsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: requestsQueueName
}

resource outcomesQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: outcomesQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource toldTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: toldTableName
}

resource createAndWait 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'logic-upgrade-create-and-wait-${uniqueString(functionApp.id)}'
  location: location
  tags: tags
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('create-and-wait.workflow.json')
    parameters: {
      functionAppUrl: {
        value: 'https://${functionApp.properties.defaultHostName}'
      }
      functionKey: {
        value: integrationKey
      }
      notifyUrl: {
        value: notifyUrl
      }
    }
  }
}

resource enqueueRequest 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'logic-upgrade-enqueue-${uniqueString(functionApp.id)}'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('enqueue-request.workflow.json')
    parameters: {
      storageAccountName: {
        value: storageAccount.name
      }
      requestsQueue: {
        value: requestsQueue.name
      }
    }
  }
}

resource reactToOutcomes 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'logic-upgrade-outcomes-${uniqueString(functionApp.id)}'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('react-to-outcomes.workflow.json')
    parameters: {
      storageAccountName: {
        value: storageAccount.name
      }
      outcomesQueue: {
        value: outcomesQueue.name
      }
      toldTable: {
        value: toldTable.name
      }
      notifyUrl: {
        value: notifyUrl
      }
    }
  }
}

resource campaignSummaryToTeams 'Microsoft.Logic/workflows@2019-05-01' = if (!empty(teamsWebhookUrl)) {
  name: 'logic-upgrade-campaign-summary-${uniqueString(functionApp.id)}'
  location: location
  tags: tags
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('campaign-summary-to-teams.workflow.json')
    parameters: {
      functionAppUrl: {
        value: 'https://${functionApp.properties.defaultHostName}'
      }
      functionKey: {
        value: operatorKey
      }
      teamsWebhookUrl: {
        value: teamsWebhookUrl
      }
    }
  }
}

resource enqueueCanSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(requestsQueue.id, enqueueRequest.id, queueMessageSenderRoleId)
  scope: requestsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSenderRoleId)
    principalId: enqueueRequest.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource outcomesCanProcess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outcomesQueue.id, reactToOutcomes.id, queueMessageProcessorRoleId)
  scope: outcomesQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageProcessorRoleId)
    principalId: reactToOutcomes.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource outcomesCanRemember 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(toldTable.id, reactToOutcomes.id, tableDataContributorRoleId)
  scope: toldTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', tableDataContributorRoleId)
    principalId: reactToOutcomes.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Names only; the trigger URLs carry a SAS signature: read them with
// az rest --method post --uri "<workflow id>/triggers/When_an_upgrade_is_requested/listCallbackUrl?api-version=2019-05-01"
output CREATE_AND_WAIT_WORKFLOW string = createAndWait.name
output ENQUEUE_WORKFLOW string = enqueueRequest.name
output OUTCOMES_WORKFLOW string = reactToOutcomes.name
output CAMPAIGN_SUMMARY_WORKFLOW string = empty(teamsWebhookUrl) ? '' : campaignSummaryToTeams.name
