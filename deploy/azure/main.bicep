// plurenet relay on Azure Container Apps (see README.md beside this file).
//
// Clients reach wss://<app fqdn>/v1/relay on 443; the Container Apps ingress
// terminates TLS and forwards the WebSocket to the relay's plain ws:// on
// 8080. With enableRedis, an Azure Managed Redis (Balanced_B0, one
// non-clustered database, access keys on, TLS on port 10000) is created and
// every replica joins it as the relay backplane, so members connected to
// different replicas reach each other.
//
// No Bicep compiler was at hand where this was written: deploy/bicep_test.go
// checks the invariants below that a compiler would not catch anyway (the
// key encoded in the Redis URL, lowercase names, the registry entry, the
// resource types and API versions checked against Azure's reference).

@description('Azure region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Name of the Container App and prefix of every other resource: lowercase letters, digits and single hyphens, starting with a letter (Container App names are lowercase).')
@minLength(2)
@maxLength(20)
param name string = 'plurenet-relay'

@description('Relay container image built from deploy/Dockerfile, e.g. REGISTRY/OWNER/plurenet-relay:TAG. A private image needs registryServer, registryUsername and registryPassword.')
param image string

@description('Registry host of a private image (the part of image before the first slash). Empty: the image is pulled anonymously, so it must be public.')
param registryServer string = ''

@description('User name for registryServer (for GitHub\'s registry the GitHub user; for Azure Container Registry a token or the admin user).')
param registryUsername string = ''

@description('Password or token for registryServer (for GitHub\'s registry a token with read:packages). Kept in a Container Apps secret.')
@secure()
param registryPassword string = ''

@description('Replicas always running. 1 keeps the relay warm: a scaled-to-zero relay would drop every mesh that depends on it.')
@minValue(1)
param minReplicas int = 1

@description('Most replicas. More than 1 needs enableRedis, or members on different replicas cannot reach each other.')
@minValue(1)
@maxValue(30)
param maxReplicas int = 1

@description('Concurrent requests (open WebSockets count) per replica before another is added.')
param concurrentRequestsPerReplica int = 5000

@description('vCPU per replica (0.25 steps up to 4 on the Consumption profile).')
param cpu string = '0.5'

@description('Memory per replica; must pair with cpu (0.5 vCPU: 1Gi).')
param memory string = '1Gi'

@description('Drain each connection at this age (a Go duration). Clients replace it make-before-break at about 80% of it, so nothing is lost when the platform later ends long connections anyway.')
param maxConnLifetime string = '25m'

@description('Create an Azure Managed Redis and use it as the relay backplane.')
param enableRedis bool = false

@description('Azure Managed Redis SKU. Balanced_B0 (0.5 GB) is the smallest; the relay keeps only presence entries in it.')
param redisSku string = 'Balanced_B0'

@description('Clustering policy of the Redis database. The relay speaks to Redis with a non-cluster client: NoCluster (non-clustered, caches up to 25 GB) or EnterpriseCluster (one endpoint behind the Redis proxy). OSSCluster would need a cluster client and is not offered.')
@allowed([
  'NoCluster'
  'EnterpriseCluster'
])
param redisClusteringPolicy string = 'NoCluster'

// Bicep has no pattern decorator: the lowercase rule is enforced here (a
// Container App with an uppercase name is refused by Azure only after the
// environment and Redis were created); deploy.sh checks the full pattern.
var appName = name == toLower(name) ? name : fail('name "${name}" has uppercase letters: Container App names are lowercase letters, digits and hyphens')

// Without a backplane one replica must hold every member of a mesh.
var replicasMax = enableRedis ? max(minReplicas, maxReplicas) : 1
var replicasMin = enableRedis ? minReplicas : 1
var suffix = uniqueString(resourceGroup().id, appName)

// Azure Managed Redis serves TLS on this port, for every clustering policy.
var redisPort = 10000

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${appName}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

// A workload-profiles environment (Microsoft's recommended kind; the
// Consumption-only kind is legacy) with just the serverless Consumption
// profile, billed per use. Dedicated profiles, e.g. for premium ingress, can
// be added to it later without recreating the environment.
resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${appName}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

// Azure Managed Redis (Microsoft.Cache/redisEnterprise); Azure Cache for
// Redis (Microsoft.Cache/redis) is being retired.
resource redis 'Microsoft.Cache/redisEnterprise@2025-07-01' = if (enableRedis) {
  name: '${appName}-redis-${suffix}'
  location: location
  sku: {
    name: redisSku
  }
  properties: {
    minimumTlsVersion: '1.2'
    // Required on create from this API version on. The Consumption
    // environment reaches Redis over the Internet; TLS and the access key
    // protect it.
    publicNetworkAccess: 'Enabled'
  }
}

resource redisDb 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = if (enableRedis) {
  parent: redis
  // Azure Managed Redis has one database and it is named default.
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: redisPort
    clusteringPolicy: redisClusteringPolicy
    // Presence entries carry a TTL; evicting them early would make members
    // vanish. A full cache should fail loudly instead.
    evictionPolicy: 'NoEviction'
    // Off by default from this API version on; the relay authenticates
    // with the access key.
    accessKeysAuthentication: 'Enabled'
  }
}

// The backplane URL carries the access key: it goes in a Container Apps
// secret and reaches the relay as PLURENET_RELAY_BACKPLANE, never as a
// command-line argument (visible in the portal and in process listings). The
// key is base64 and holds '/', '+' and '=' in about half of all keys:
// unencoded, the URL parser takes part of it for the port and the relay
// cannot start.
var backplaneSecret = enableRedis ? [
  {
    name: 'relay-backplane'
    value: 'rediss://:${uriComponent(redisDb.listKeys().primaryKey)}@${redis.properties.hostName}:${redisPort}/0'
  }
] : []
var backplaneEnv = enableRedis ? [
  {
    name: 'PLURENET_RELAY_BACKPLANE'
    secretRef: 'relay-backplane'
  }
] : []

// A private image: the app pulls with these credentials, kept as a secret.
var registrySecret = empty(registryServer) ? [] : [
  {
    name: 'registry-password'
    value: empty(registryUsername) || empty(registryPassword) ? fail('registryServer is set: registryUsername and registryPassword are needed too') : registryPassword
  }
]
var registries = empty(registryServer) ? [] : [
  {
    server: registryServer
    username: registryUsername
    passwordSecretRef: 'registry-password'
  }
]

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  properties: {
    managedEnvironmentId: env.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8080
        // HTTP/1.1 upgrade to WebSocket is served under 'auto' and 'http'.
        transport: 'auto'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: registries
      secrets: concat(backplaneSecret, registrySecret)
    }
    template: {
      // SIGTERM starts the relay's drain (Drain frames, then a 5 s grace);
      // this leaves it the time to finish before the replica is killed.
      terminationGracePeriodSeconds: 30
      containers: [
        {
          name: 'relay'
          image: image
          // The image's ENTRYPOINT is plurenet relay --listen :8080.
          args: [
            '--max-conn-lifetime'
            maxConnLifetime
            // The ingress appends the client's address to X-Forwarded-For;
            // without this every client would count as the ingress's
            // address for the per-address limits.
            '--trust-proxy-headers'
            // Container Apps ingress carries HTTP, not UDP: no STUN here.
            '--stun-listen='
          ]
          env: backplaneEnv
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              // 503 while draining: the ingress stops sending new clients.
              type: 'Readiness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 5
              failureThreshold: 1
            }
          ]
        }
      ]
      scale: {
        minReplicas: replicasMin
        maxReplicas: replicasMax
        rules: [
          {
            name: 'concurrent-connections'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequestsPerReplica)
              }
            }
          }
        ]
      }
    }
  }
}

@description('The relay URL for clients: --relay / syncRelay.')
output relayUrl string = 'wss://${app.properties.configuration.ingress.fqdn}'

output healthUrl string = 'https://${app.properties.configuration.ingress.fqdn}/healthz'
