#!/usr/bin/env bash
# Deploys the plurenet relay to Azure Container Apps and prints its URL.
#
#   ./deploy.sh IMAGE [RESOURCE_GROUP] [LOCATION]
#
# IMAGE is the relay image (built from deploy/Dockerfile, pushed
# to a registry the app can pull anonymously). Environment:
#   ENABLE_REDIS=true   add an Azure Cache for Redis backplane (then
#   MAX_REPLICAS=N      more than one replica makes sense)
# Needs the Azure CLI (az login done) with Bicep support (az bicep install).
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 IMAGE [RESOURCE_GROUP] [LOCATION]" >&2
	exit 2
fi
image=$1
group=${2:-plurenet-relay}
location=${3:-westeurope}
enable_redis=${ENABLE_REDIS:-false}
max_replicas=${MAX_REPLICAS:-1}
here=$(cd "$(dirname "$0")" && pwd)

az group create --name "$group" --location "$location" --output none
url=$(az deployment group create \
	--resource-group "$group" \
	--name plurenet-relay \
	--template-file "$here/main.bicep" \
	--parameters image="$image" enableRedis="$enable_redis" maxReplicas="$max_replicas" \
	--query properties.outputs.relayUrl.value \
	--output tsv)

echo "relay: $url"
echo "health: ${url/wss:/https:}/healthz"
echo "use it: plurenet up --relay $url ...   (or \"syncRelay\": \"$url\" in the config file)"
