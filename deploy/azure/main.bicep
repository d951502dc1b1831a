// plurenet relay on Azure Container Apps (see README.md beside this file).
//
// Clients reach wss://<app fqdn>/v1/relay on 443; the Container Apps ingress
// terminates TLS and forwards the WebSocket to the relay's plain ws:// on
// 8080. With enableRedis, an Azure Cache for Redis (Basic C0) is created and
// every replica joins it as the relay backplane, so members connected to
// different replicas reach each other.

@description('Azure region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Name prefix of every resource (letters, digits, hyphens).')
@minLength(3)
@maxLength(20)
param name string = 'plurenet-relay'

@description('Relay container image, built from deploy/Dockerfile and pushed to a registry the app can pull from anonymously (e.g. ghcr.io/OWNER/plurenet-relay:TAG).')
param image string

@description('Replicas always running. 1 keeps the relay warm: a scaled-to-zero relay would drop every mesh that depends on it.')
@minValue(1)
param minReplicas int = 1

@description('Most replicas. More than 1 needs enableRedis, or members on different replicas cannot reach each other.')
@minValue(1)
@maxValue(30)
param maxReplicas int = 1

@description('Concurrent requests (open WebSockets count) per replica before another is added.')
param concurrentRequestsPerReplica int = 5000

@description('vCPU per replica (0.25 steps up to 4 on the consumption profile).')
param cpu string = '0.5'

@description('Memory per replica; must pair with cpu (0.5 vCPU: 1Gi).')
param memory string = '1Gi'

@description('Drain each connection at this age (a Go duration). Clients replace it make-before-break at about 80% of it, so nothing is lost when the platform later ends long connections anyway.')
param maxConnLifetime string = '25m'

@description('Create an Azure Cache for Redis (Basic C0) and use it as the relay backplane.')
param enableRedis bool = false

// Without a backplane one replica must hold every member of a mesh.
var replicasMax = enableRedis ? max(minReplicas, maxReplicas) : 1
var replicasMin = enableRedis ? minReplicas : 1
var suffix = uniqueString(resourceGroup().id, name)

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource env 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource redis 'Microsoft.Cache/redis@2023-08-01' = if (enableRedis) {
  name: '${name}-redis-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'Basic'
      family: 'C'
      capacity: 0
    }
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    redisConfiguration: {}
  }
}

// The backplane URL carries the access key: it goes in a Container Apps
// secret and reaches the relay as PLURENET_RELAY_BACKPLANE, never as a
// command-line argument (visible in the portal and in process listings).
var backplaneSecret = enableRedis ? [
  {
    name: 'relay-backplane'
    value: 'rediss://:${redis.listKeys().primaryKey}@${redis.properties.hostName}:${redis.properties.sslPort}/0'
  }
] : []
var backplaneEnv = enableRedis ? [
  {
    name: 'PLURENET_RELAY_BACKPLANE'
    secretRef: 'relay-backplane'
  }
] : []

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  properties: {
    managedEnvironmentId: env.id
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
      secrets: backplaneSecret
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
