// Optional network isolation (main.bicep enableNetworkIsolation): a VNet with a subnet for the Function App's
// VNet integration and one for private endpoints to storage (blob, queue, table) and Key Vault, each with its
// private DNS zone linked to the VNet.

param vNetName string
param location string = resourceGroup().location
param tags object = {}
param storageAccountId string
param keyVaultId string

var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'

// One private endpoint per target service; groupId is the sub-resource, zone its privatelink DNS zone.
var privateLinks = [
  {
    name: 'blob'
    resourceId: storageAccountId
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    resourceId: storageAccountId
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    resourceId: storageAccountId
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'vault'
    resourceId: keyVaultId
    groupId: 'vault'
    zone: 'privatelink.vaultcore.azure.net'
  }
]

module virtualNetwork 'br/public:avm/res/network/virtual-network:0.6.1' = {
  name: 'vnet'
  params: {
    name: vNetName
    location: location
    tags: tags
    addressPrefixes: [
      '10.0.0.0/16'
    ]
    subnets: [
      {
        name: privateEndpointSubnetName
        addressPrefix: '10.0.1.0/24'
        privateEndpointNetworkPolicies: 'Disabled'
      }
      {
        // Flex Consumption VNet integration needs a subnet delegated to Microsoft.App/environments.
        name: appSubnetName
        addressPrefix: '10.0.2.0/24'
        delegation: 'Microsoft.App/environments'
      }
    ]
  }
}

module privateDnsZones 'br/public:avm/res/network/private-dns-zone:0.7.1' = [
  for link in privateLinks: {
    name: 'dns-${link.name}'
    params: {
      name: link.zone
      location: 'global'
      tags: tags
      virtualNetworkLinks: [
        {
          name: '${vNetName}-${link.name}'
          virtualNetworkResourceId: virtualNetwork.outputs.resourceId
          registrationEnabled: false
        }
      ]
    }
  }
]

module privateEndpoints 'br/public:avm/res/network/private-endpoint:0.9.1' = [
  for (link, i) in privateLinks: {
    name: 'pep-${link.name}'
    params: {
      name: 'pep-${link.name}-${uniqueString(link.resourceId)}'
      location: location
      tags: tags
      subnetResourceId: '${virtualNetwork.outputs.resourceId}/subnets/${privateEndpointSubnetName}'
      privateLinkServiceConnections: [
        {
          name: link.name
          properties: {
            privateLinkServiceId: link.resourceId
            groupIds: [
              link.groupId
            ]
          }
        }
      ]
      privateDnsZoneGroup: {
        privateDnsZoneGroupConfigs: [
          {
            privateDnsZoneResourceId: privateDnsZones[i].outputs.resourceId
          }
        ]
      }
    }
  }
]

output appSubnetId string = '${virtualNetwork.outputs.resourceId}/subnets/${appSubnetName}'
output privateEndpointSubnetId string = '${virtualNetwork.outputs.resourceId}/subnets/${privateEndpointSubnetName}'
