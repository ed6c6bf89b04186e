// One Key Vault secret, written from a @secure() parameter. keyvault.bicep calls this module only when the
// value is given. (A module rather than a conditional resource so that checkov sees the secret's properties.)

param vaultName string
param name string
@secure()
param value string
@description('What the secret holds, recorded as its content type.')
param contentType string
@description('ISO 8601 duration from now to the expiry recorded on the secret (Key Vault still serves it after).')
param lifetime string
@description('Deployment time; only used to compute the expiry date.')
param now string = utcNow()

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: name
  properties: {
    value: value
    contentType: contentType
    attributes: {
      enabled: true
      exp: dateTimeToEpoch(dateTimeAdd(now, lifetime))
    }
  }
}

output name string = secret.name
