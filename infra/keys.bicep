// The app's function keys (docs/security.md, the key model), deployed after the code: a function key can only be set
// on a function the host has indexed, so this is a step after `azd up` / `azd deploy`, not part of main.bicep:
//   az deployment group create -g "$AZURE_RESOURCE_GROUP" -f infra/keys.bicep \
//     -p functionAppName="$AZURE_FUNCTION_APP_NAME" integrationKey="$INTEGRATION_KEY" operatorKey="$OPERATOR_KEY"
// - integration: opens create, eligibility and status only. For CRM webhooks, Logic Apps, the custom connector.
// - operator: opens the ledger's routes (the list route, health details, the campaign summary). For operators only.
// Neither is a host key: the host keys (default, _master) open every function-level route and are never handed out.
// Run it again with new values to rotate a key; `az functionapp function keys list` shows the values again.

@description('Name of the function app (azd output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@secure()
@minLength(32)
@description('The integration key: at least 32 random characters (letters, digits, - and _).')
param integrationKey string

@secure()
@minLength(32)
@description('The operator key, another value: at least 32 random characters (letters, digits, - and _).')
param operatorKey string

var access = loadJsonContent('app/function-access.json')

module integration 'app/function-key.bicep' = {
  name: 'function-key-integration'
  params: {
    functionAppName: functionAppName
    functionNames: access.integration
    keyName: 'integration'
    keyValue: integrationKey
  }
}

module operator 'app/function-key.bicep' = {
  name: 'function-key-operator'
  params: {
    functionAppName: functionAppName
    functionNames: access.operator
    keyName: 'operator'
    keyValue: operatorKey
  }
}

output INTEGRATION_FUNCTIONS array = integration.outputs.functionNames
output OPERATOR_FUNCTIONS array = operator.outputs.functionNames
