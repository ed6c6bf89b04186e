// One named function key, with one value, on each of the given functions of a function app. A function key opens
// its own function only, where a host key opens every function-level route (docs/security.md: the key model).
// The functions must exist: deploy this after the code (`azd deploy`), never with a new, empty app.

@description('Name of the function app.')
param functionAppName string

@description('The functions to add the key to, by the host\'s names (the Python function names of function_app.py).')
param functionNames array

@description('Name of the key: integration or operator.')
param keyName string

@secure()
@minLength(32)
@description('The key\'s value, the same on every function named: at least 32 random characters (letters, digits, - and _).')
param keyValue string

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// bicep-types: the two types below are not in ../shared's stored subset yet; checked against Azure's full
// Microsoft.Web 2024-04-01 types they give no finding (the properties line aside, marked below).
resource functions 'Microsoft.Web/sites/functions@2024-04-01' existing = [ // bicep-types: ignore (type not in ../shared/schemas/azure-types yet; checked against Azure's Microsoft.Web 2024-04-01 types)
  for name in functionNames: {
    parent: functionApp
    name: name
  }
]

// The published type declares value at the top level; Azure takes it under properties (Azure/bicep-types-az#1357).
resource keys 'Microsoft.Web/sites/functions/keys@2024-04-01' = [ // bicep-types: ignore (type not in ../shared/schemas/azure-types yet; checked against Azure's Microsoft.Web 2024-04-01 types)
  for (name, i) in functionNames: {
    parent: functions[i]
    name: keyName
    properties: { // bicep-types: ignore (the published type puts value at the top level; Azure reads it here)
      name: keyName
      value: keyValue
    }
  }
]

output keyName string = keyName
output functionNames array = functionNames
