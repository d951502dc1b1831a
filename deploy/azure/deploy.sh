#!/usr/bin/env bash
# Deploys the plurenet relay to Azure Container Apps and prints its URL.
#
#   ./deploy.sh IMAGE [RESOURCE_GROUP] [LOCATION]
#
# IMAGE is the relay image, built from deploy/Dockerfile and pushed to a
# registry. Environment:
#   NAME=plurenet-relay   the Container App's name: lowercase letters, digits
#                         and single hyphens, starting with a letter, 2-20 long
#   ENABLE_REDIS=true     add an Azure Managed Redis backplane (then
#   MAX_REPLICAS=N        more than one replica makes sense)
#   REGISTRY_USERNAME, REGISTRY_PASSWORD
#                         credentials for a private image; the registry is
#                         IMAGE's host (REGISTRY in REGISTRY/OWNER/NAME:TAG).
#                         They reach az in a temporary 0600 parameters file,
#                         never on a command line.
# Needs the Azure CLI, logged in (az login), with a current Bicep
# (az bicep upgrade).
set -euo pipefail

die() {
	echo "deploy.sh: $*" >&2
	exit 2
}

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
	echo "usage: $0 IMAGE [RESOURCE_GROUP] [LOCATION]" >&2
	exit 2
fi
image=$1
group=${2:-plurenet-relay}
location=${3:-westeurope}
name=${NAME:-plurenet-relay}
enable_redis=${ENABLE_REDIS:-false}
max_replicas=${MAX_REPLICAS:-1}
here=$(cd "$(dirname "$0")" && pwd)

command -v az >/dev/null || die "the Azure CLI (az) is not installed"

# The template checks what Bicep can; these fail before anything is created.
if ! [[ $name =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ ]] || [ ${#name} -lt 2 ] || [ ${#name} -gt 20 ]; then
	die "NAME \"$name\": use 2-20 lowercase letters, digits and single hyphens, starting with a letter"
fi
case $enable_redis in
true | false) ;;
*) die "ENABLE_REDIS \"$enable_redis\": use true or false" ;;
esac
if ! [[ $max_replicas =~ ^[0-9]+$ ]] || [ "$max_replicas" -lt 1 ] || [ "$max_replicas" -gt 30 ]; then
	die "MAX_REPLICAS \"$max_replicas\": use a number from 1 to 30"
fi
if [ "$max_replicas" -gt 1 ] && [ "$enable_redis" != true ]; then
	die "MAX_REPLICAS=$max_replicas needs ENABLE_REDIS=true: replicas without a backplane share nothing"
fi

# The registry is the image's first path element, which must name a host
# (hold a dot or a port, or be localhost) when credentials are given.
registry=
if [ -n "${REGISTRY_USERNAME:-}" ] || [ -n "${REGISTRY_PASSWORD:-}" ]; then
	[ -n "${REGISTRY_USERNAME:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ] ||
		die "set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither (public image)"
	registry=${image%%/*}
	if [ "$registry" = "$image" ] || ! { [[ $registry == *.* ]] || [[ $registry == *:* ]] || [ "$registry" = localhost ]; }; then
		die "IMAGE \"$image\" must name its registry host (REGISTRY/OWNER/NAME:TAG) when REGISTRY_USERNAME is set"
	fi
fi

# json_string prints $1 as a JSON string.
json_string() {
	local s=$1
	[[ $s == *[[:cntrl:]]* ]] && die "a setting holds a control character"
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

umask 077
params=$(mktemp)
trap 'rm -f "$params"' EXIT
cat >"$params" <<EOF
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "name": {"value": $(json_string "$name")},
    "image": {"value": $(json_string "$image")},
    "enableRedis": {"value": $enable_redis},
    "maxReplicas": {"value": $max_replicas},
    "registryServer": {"value": $(json_string "$registry")},
    "registryUsername": {"value": $(json_string "${REGISTRY_USERNAME:-}")},
    "registryPassword": {"value": $(json_string "${REGISTRY_PASSWORD:-}")}
  }
}
EOF

az group create --name "$group" --location "$location" --output none
url=$(az deployment group create \
	--resource-group "$group" \
	--name plurenet-relay \
	--template-file "$here/main.bicep" \
	--parameters "@$params" \
	--query properties.outputs.relayUrl.value \
	--output tsv)

echo "relay: $url"
echo "health: ${url/wss:/https:}/healthz"
echo "use it: plurenet up --relay $url ...   (or \"syncRelay\": \"$url\" in the config file)"
