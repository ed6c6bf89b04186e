// Key Vault in RBAC mode holding the three Partner Center secrets (shared/partner_center/secrets.py reads them).
// A secret is written only when its @secure() parameter is given, so a later `azd provision` without the
// values never overwrites what an operator put into the vault. No output carries a secret value.

param name string
param location string = resourceGroup().location
param tags object = {}

param appIdSecretName string
param appSecretSecretName string
param refreshTokenSecretName string

@secure()
param appId string = ''
@secure()
param appSecret string = ''
@secure()
param refreshToken string = ''

@description('ISO 8601 duration recorded as the expiry of the app id and app secret secrets.')
param appSecretLifetime string = 'P180D'

@description('Partner Center refresh tokens are valid for 90 days; the secret\'s expiry says when to re-consent.')
param refreshTokenLifetime string = 'P90D'

@description('Deny public network access (private endpoint in app/network.bicep) except allowedIpRange.')
param enableNetworkIsolation bool = false

@description('One public IP range (CIDR) still allowed when network isolation is on; empty for none.')
param allowedIpRange string = ''

param logAnalyticsWorkspaceId string

var allowedIpRules = [
  {
    value: allowedIpRange
  }
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The firewall default action is Deny when enableNetworkIsolation is true. Off by default so that operators can set the secrets from their shell; data access is RBAC-only (Key Vault Secrets User / Officer).
  // checkov:skip=CKV_AZURE_189: Public network access is Disabled when enableNetworkIsolation is true (unless allowedIpRange names an operator's range); see CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    // Disabled with network isolation, unless allowedIpRange lets one operator range in through the firewall.
    publicNetworkAccess: enableNetworkIsolation && empty(allowedIpRange) ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: enableNetworkIsolation ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: empty(allowedIpRange) ? [] : allowedIpRules
    }
  }
}

module appIdSecret 'keyvault-secret.bicep' = if (!empty(appId)) {
  name: 'secret-app-id'
  params: {
    vaultName: vault.name
    name: appIdSecretName
    value: appId
    contentType: 'text/plain; Partner Center Entra app (client) id'
    lifetime: appSecretLifetime
  }
}

module appSecretSecret 'keyvault-secret.bicep' = if (!empty(appSecret)) {
  name: 'secret-app-secret'
  params: {
    vaultName: vault.name
    name: appSecretSecretName
    value: appSecret
    contentType: 'text/plain; Partner Center Entra app client secret'
    lifetime: appSecretLifetime
  }
}

module refreshTokenSecret 'keyvault-secret.bicep' = if (!empty(refreshToken)) {
  name: 'secret-refresh-token'
  params: {
    vaultName: vault.name
    name: refreshTokenSecretName
    value: refreshToken
    contentType: 'text/plain; Partner Center App+User refresh token'
    lifetime: refreshTokenLifetime
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
// Secret names (not values), so that dependants wait for the secrets written in this deployment.
output appIdSecretName string = appIdSecretName
output appSecretSecretName string = appSecretSecretName
output refreshTokenSecretName string = refreshTokenSecretName
