// Product upgrade functions: one `azd up` to a Flex Consumption Function App (Python 3.11) that reaches
// storage, Key Vault and Application Insights with its user-assigned managed identity only.
// Layout follows Azure-Samples/functions-quickstart-python-http-azd; see infra/README.md for the deployment guide.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used to derive a short unique token for resource names.')
param environmentName string

@minLength(1)
@description('Primary location for all resources. Must offer Flex Consumption: az functionapp list-flexconsumption-locations')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the user running azd (azd fills it in). Gets queue access for operating the app, and Key Vault Secrets Officer on the vault while grantUserSecretsOfficer is on. Leave empty in CI.')
param principalId string = ''

@description('Kind of principalId: User for a person running azd, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('The partner\'s own Entra tenant (id or domain) where the App+User token is requested (PARTNER_CENTER_TENANT_ID).')
param partnerCenterTenantId string

@description('Entra authority host (PARTNER_CENTER_AUTHORITY_HOST); change only for sovereign clouds.')
param partnerCenterAuthorityHost string = 'https://login.microsoftonline.com'

@description('Partner Center REST root without /v1 (PARTNER_CENTER_BASE_URL).')
param partnerCenterBaseUrl string = 'https://api.partnercenter.microsoft.com'

// The three Partner Center secrets. Leave empty (the default) and put them into the vault with
// `az keyvault secret set` (infra/README.md); a value given here is written to the vault and nowhere else.
// An empty value never overwrites a secret already in the vault.
@secure()
@description('Optional: Entra app (client) id of the Partner Center app, stored as a Key Vault secret.')
param partnerCenterAppId string = ''

@secure()
@description('Optional: the Partner Center app\'s client secret, stored as a Key Vault secret.')
param partnerCenterAppSecret string = ''

@secure()
@description('Optional: the App+User refresh token from the secure application model consent, stored as a Key Vault secret.')
param partnerCenterRefreshToken string = ''

@description('Grant the deploying user (principalId) Key Vault Secrets Officer on the vault, to put the three secrets in with `az keyvault secret set`. Off by default: turn it on for the first setup or a re-consent, then delete the assignment (infra/README.md).')
param grantUserSecretsOfficer bool = false

@description('Set to true once the refresh-token secret exists in the vault (put there by hand), so the app identity gets Key Vault Secrets Officer on that one secret for rotation.')
param refreshTokenSecretExists bool = false

@description('Lifetime recorded as the expiry of the app id and app secret secrets: match the client secret\'s lifetime in Entra ID.')
param appSecretLifetime string = 'P180D'

@description('Network isolation: VNet integration for the Function App and private endpoints for storage and Key Vault. Off by default.')
param enableNetworkIsolation bool = false

@description('With network isolation on: one public IP range (CIDR) allowed to reach Key Vault, e.g. an operator\'s address for `az keyvault secret set`. Empty: no public access to the vault.')
param keyVaultAllowedIpRange string = ''

@description('Flex Consumption instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption scale-out limit: the most instances the app runs at once (1 to 1000). It caps the cost of a burst (each instance is billed for its memory while it runs) and the calls Partner Center sees in parallel (an instance runs up to 24 messages of one queue function at once: host.json batchSize 16 + newBatchThreshold 8).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Email address the alerts are sent to (an action group). Empty: no action group; the alerts still fire and show in the portal. Set it with `azd env set ALERT_EMAIL ops@example.com`.')
param alertEmail string = ''

// Optional name overrides; empty means abbreviation + resource token.
param resourceGroupName string = ''
param functionAppName string = ''
param appServicePlanName string = ''
param apiUserAssignedIdentityName string = ''
param storageAccountName string = ''
param keyVaultName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''
param vNetName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

@description('Public base URL standing for the app\'s /api (API Management, custom domain) in Location headers; empty: https://{WEBSITE_HOSTNAME}.')
param publicUrl string = ''

// Signs the list route's continuation tokens (PRODUCT_UPGRADE_CONTINUATION_KEY, HMAC-SHA256), so only tokens this
// app issued move a listing on. Two random GUIDs (244 bits), new at each deployment: a token issued before a
// `azd provision` is then refused with 400 ("start again without it"), nothing else is lost.
@secure()
@description('PRODUCT_UPGRADE_CONTINUATION_KEY; default: random at each deployment.')
param continuationKey string = '${newGuid()}${newGuid()}' // checkov:skip=CKV_AZURE_131: Not a hard-coded value: newGuid() draws a new random one at each deployment; none is ever written in the template or its parameters.

@description('The partner\'s known limit on Partner Center calls per minute, all instances together; empty: learned from Partner Center\'s 429s.')
param maxCallsPerMinute string = ''

// Python version of the Functions runtime; the same 3.11 as the README, CI and requirements.
var pythonVersion = '3.11'

// The app settings' default names (shared/settings.py DEFAULTS; the settings table of docs/settings.md). The app
// settings, the storage queues and table, the role assignments and the Key Vault secrets below all use these
// variables.
var requestsQueueName = 'product-upgrade-requests'
var resultsQueueName = 'product-upgrade-results'
// The Functions host moves a message here after maxDequeueCount attempts; created up front so it can be monitored.
var poisonQueueName = '${requestsQueueName}-poison'
var upgradesTableName = 'productupgrades'
// Equal to host.json extensions.queues.maxDequeueCount.
var maxAttempts = '5'
// Upgrade tracking: scheduled status checks (internal) and one outcome message per ended upgrade.
var trackingQueueName = 'product-upgrade-tracking'
var outcomesQueueName = 'product-upgrade-outcomes'
// The tracking queue is a trigger too: its poison queue is created up front as well (the app's identity may send
// to it but not create queues).
var trackingPoisonQueueName = '${trackingQueueName}-poison'
var pollSeconds = '300'
var trackingHours = '168'
// The longest gap between two status checks of one upgrade (checks slow down after its first hour).
var maxPollSeconds = '3600'
var deferSeconds = '3600'
var maxDeferrals = '24'
// The daily keep-alive renews the App+User token when its refresh token has gone this many days unused.
var tokenKeepAliveDays = '7'
var appIdSecretName = 'partner-center-app-id'
var appSecretSecretName = 'partner-center-app-secret'
var refreshTokenSecretName = 'partner-center-refresh-token'

var apiName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(apiName, 32)}-${take(toLower(uniqueString(apiName, resourceToken)), 7)}'
var vaultName = !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
var virtualNetworkName = !empty(vNetName) ? vNetName : '${abbrs.networkVirtualNetworks}${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The Function App's only identity: storage, Key Vault and Application Insights are reached with it.
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    name: !empty(apiUserAssignedIdentityName) ? apiUserAssignedIdentityName : '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

// Flex Consumption plan (FC1, Linux).
module appServicePlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    name: !empty(appServicePlanName) ? appServicePlanName : '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'loganalytics'
  scope: rg
  params: {
    name: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

// Application Insights accepts Entra-authenticated telemetry only (disableLocalAuth); the app sends it with
// its identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) under Monitoring Metrics Publisher.
module monitoring 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'appinsights'
  scope: rg
  params: {
    name: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentStorageContainerName
    queueNames: [
      requestsQueueName
      resultsQueueName
      poisonQueueName
      trackingQueueName
      outcomesQueueName
      trackingPoisonQueueName
    ]
    tableName: upgradesTableName
    enableNetworkIsolation: enableNetworkIsolation
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: vaultName
    location: location
    tags: tags
    appIdSecretName: appIdSecretName
    appSecretSecretName: appSecretSecretName
    refreshTokenSecretName: refreshTokenSecretName
    appId: partnerCenterAppId
    appSecret: partnerCenterAppSecret
    refreshToken: partnerCenterRefreshToken
    appSecretLifetime: appSecretLifetime
    enableNetworkIsolation: enableNetworkIsolation
    allowedIpRange: keyVaultAllowedIpRange
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

module network 'app/network.bicep' = if (enableNetworkIsolation) {
  name: 'network'
  scope: rg
  params: {
    vNetName: virtualNetworkName
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: apiName
    location: location
    tags: tags
    appServicePlanId: appServicePlan.outputs.resourceId
    applicationInsightsName: monitoring.outputs.name
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
    virtualNetworkSubnetId: enableNetworkIsolation ? network.outputs.appSubnetId : ''
    keyVaultUri: keyVault.outputs.vaultUri
    appIdSecretName: keyVault.outputs.appIdSecretName
    appSecretSecretName: keyVault.outputs.appSecretSecretName
    refreshTokenSecretName: keyVault.outputs.refreshTokenSecretName
    partnerCenterTenantId: partnerCenterTenantId
    partnerCenterAuthorityHost: partnerCenterAuthorityHost
    partnerCenterBaseUrl: partnerCenterBaseUrl
    requestsQueueName: requestsQueueName
    resultsQueueName: resultsQueueName
    upgradesTableName: upgradesTableName
    maxAttempts: maxAttempts
    trackingQueueName: trackingQueueName
    outcomesQueueName: outcomesQueueName
    pollSeconds: pollSeconds
    trackingHours: trackingHours
    maxPollSeconds: maxPollSeconds
    deferSeconds: deferSeconds
    maxDeferrals: maxDeferrals
    publicUrl: publicUrl
    tokenKeepAliveDays: tokenKeepAliveDays
    continuationKey: continuationKey
    maxCallsPerMinute: maxCallsPerMinute
  }
}

// Alerts over the app's signals and the queue logs, mailed to alertEmail when given, and the campaign workbook.
module monitoringAlerts 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.name
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
    alertEmail: alertEmail
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    alertNamePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}'
    trackingHours: trackingHours
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.name
    keyVaultName: keyVault.outputs.name
    refreshTokenSecretName: keyVault.outputs.refreshTokenSecretName
    requestsQueueName: requestsQueueName
    trackingQueueName: trackingQueueName
    resultsQueueName: resultsQueueName
    outcomesQueueName: outcomesQueueName
    requestsPoisonQueueName: poisonQueueName
    trackingPoisonQueueName: trackingPoisonQueueName
    tableName: upgradesTableName
    grantRefreshTokenRotation: refreshTokenSecretExists || !empty(partnerCenterRefreshToken)
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    grantUserSecretsOfficer: grantUserSecretsOfficer
  }
}

// Outputs feed azd's environment (.azure/<env>/.env). Names, endpoints and ids only: never a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.url
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URL string = keyVault.outputs.vaultUri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output PRODUCT_UPGRADE_REQUESTS_QUEUE string = requestsQueueName
output PRODUCT_UPGRADE_RESULTS_QUEUE string = resultsQueueName
