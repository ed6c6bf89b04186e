// The Function App: Flex Consumption, Python 3.11, user-assigned managed identity, identity-based storage,
// and every app setting the code reads (shared/settings.py ALL_SETTINGS; the settings table of docs/settings.md).
// Declared as our own resource, not an AVM module, so that checkov can check it.

param name string
param location string = resourceGroup().location
param tags object = {}
@description('azd deploys the code of the service of this name in azure.yaml to the app tagged with it.')
param serviceName string = 'api'
param appServicePlanId string
param applicationInsightsName string
@description('Resource id of the user-assigned managed identity.')
param identityId string
@description('Client id of the user-assigned managed identity.')
param identityClientId string
param storageAccountName string
param deploymentStorageContainerName string
param pythonVersion string = '3.11'
param instanceMemoryMB int = 2048
@description('Flex Consumption scale-out limit (main.bicep maximumInstanceCount).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100
@description('Log Analytics workspace receiving the Function App\'s logs and metrics.')
param logAnalyticsWorkspaceId string
@description('Subnet for VNet integration (delegated to Microsoft.App/environments); empty for none.')
param virtualNetworkSubnetId string = ''

param keyVaultUri string
param appIdSecretName string
param appSecretSecretName string
param refreshTokenSecretName string
param partnerCenterTenantId string
param partnerCenterAuthorityHost string
param partnerCenterBaseUrl string
param requestsQueueName string
param resultsQueueName string
param upgradesTableName string
@description('PRODUCT_UPGRADE_MAX_ATTEMPTS, equal to host.json maxDequeueCount.')
param maxAttempts string
param trackingQueueName string
param outcomesQueueName string
@description('PRODUCT_UPGRADE_POLL_SECONDS: delay between status checks of a running upgrade.')
param pollSeconds string
@description('PRODUCT_UPGRADE_TRACKING_HOURS: how long an upgrade is followed before it is reported expired.')
param trackingHours string
@description('PRODUCT_UPGRADE_MAX_POLL_SECONDS: the longest gap between two status checks of one upgrade.')
param maxPollSeconds string
@description('PRODUCT_UPGRADE_DEFER_SECONDS: delay before a request told "try again later" is tried again.')
param deferSeconds string
param maxDeferrals string
@description('PRODUCT_UPGRADE_PUBLIC_URL: public base URL for Location; empty for https://{WEBSITE_HOSTNAME}.')
param publicUrl string = ''
@description('PRODUCT_UPGRADE_TOKEN_KEEPALIVE_DAYS: the keep-alive renews the App+User token after this many days unused.')
param tokenKeepAliveDays string
@secure()
@description('PRODUCT_UPGRADE_CONTINUATION_KEY: signs the list route\'s continuation tokens (at least 32 characters).')
param continuationKey string
@description('PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE: the partner\'s known limit on Partner Center calls (all instances); empty to learn it from 429s.')
param maxCallsPerMinute string = ''

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_16: Callers authenticate with function keys (authLevel FUNCTION, see docs/security.md); App Service Authentication (Easy Auth) would reject CRM webhooks and Logic Apps that send a key.
  // checkov:skip=CKV_AZURE_17: Incoming client certificates are not part of the contract; callers use function keys over TLS 1.2+.
  // checkov:skip=CKV_AZURE_222: The HTTP trigger is called from the internet (CRM webhooks, Logic Apps); network isolation covers the app's outbound traffic to storage and Key Vault.
  // checkov:skip=CKV_AZURE_62: Same as CKV_AZURE_222: callers' addresses are not known in advance; every function except /api/health needs a function key.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances on demand; there is no fixed minimum instance count for failover.
  // checkov:skip=CKV_AZURE_213: Flex Consumption manages instance health itself; GET /api/health is there for external probes.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: appServicePlanId
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      appSettings: [
        // Identity-based host storage (replaces the AzureWebJobsStorage connection string).
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccount.name
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storageAccount.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storageAccount.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storageAccount.properties.primaryEndpoints.table
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // DefaultAzureCredential picks the user-assigned identity by this client id (Key Vault).
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        // Application Insights with Entra authentication (local auth is disabled on the component).
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD;ClientId=${identityClientId}'
        }
        // The contract's settings. PARTNER_CENTER_APP_ID / _APP_SECRET / _REFRESH_TOKEN are deliberately
        // absent: in Azure the secrets come from Key Vault only.
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'PARTNER_CENTER_APP_ID_SECRET_NAME'
          value: appIdSecretName
        }
        {
          name: 'PARTNER_CENTER_APP_SECRET_SECRET_NAME'
          value: appSecretSecretName
        }
        {
          name: 'PARTNER_CENTER_REFRESH_TOKEN_SECRET_NAME'
          value: refreshTokenSecretName
        }
        {
          name: 'PARTNER_CENTER_TENANT_ID'
          value: partnerCenterTenantId
        }
        {
          name: 'PARTNER_CENTER_AUTHORITY_HOST'
          value: partnerCenterAuthorityHost
        }
        {
          name: 'PARTNER_CENTER_BASE_URL'
          value: partnerCenterBaseUrl
        }
        {
          name: 'PRODUCT_UPGRADE_REQUESTS_QUEUE'
          value: requestsQueueName
        }
        {
          name: 'PRODUCT_UPGRADE_RESULTS_QUEUE'
          value: resultsQueueName
        }
        {
          name: 'PRODUCT_UPGRADE_TABLE'
          value: upgradesTableName
        }
        {
          name: 'PRODUCT_UPGRADE_MAX_ATTEMPTS'
          value: maxAttempts
        }
        {
          name: 'PRODUCT_UPGRADE_TRACKING_QUEUE'
          value: trackingQueueName
        }
        {
          name: 'PRODUCT_UPGRADE_OUTCOMES_QUEUE'
          value: outcomesQueueName
        }
        {
          name: 'PRODUCT_UPGRADE_POLL_SECONDS'
          value: pollSeconds
        }
        {
          name: 'PRODUCT_UPGRADE_TRACKING_HOURS'
          value: trackingHours
        }
        {
          name: 'PRODUCT_UPGRADE_MAX_POLL_SECONDS'
          value: maxPollSeconds
        }
        {
          name: 'PRODUCT_UPGRADE_DEFER_SECONDS'
          value: deferSeconds
        }
        {
          name: 'PRODUCT_UPGRADE_MAX_DEFERRALS'
          value: maxDeferrals
        }
        {
          name: 'PRODUCT_UPGRADE_PUBLIC_URL'
          value: publicUrl
        }
        {
          name: 'PRODUCT_UPGRADE_TOKEN_KEEPALIVE_DAYS'
          value: tokenKeepAliveDays
        }
        {
          name: 'PRODUCT_UPGRADE_CONTINUATION_KEY'
          value: continuationKey
        }
        {
          name: 'PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE'
          value: maxCallsPerMinute
        }
      ]
    }
  }
}

// No publishing with basic credentials (FTP or SCM): azd deploys with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Function logs (what the host and the code log) and platform metrics in Log Analytics, beside Application
// Insights: they stay queryable there with the storage and Key Vault logs.
resource functionAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'function-app-logs'
  scope: functionApp
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
