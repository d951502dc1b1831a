#!/usr/bin/env bash
# Deletes the resource group deploy.sh created, and everything in it: the
# Container App and its environment, the Log Analytics workspace and, with
# ENABLE_REDIS, the Azure Managed Redis.
#
#   ./destroy.sh [RESOURCE_GROUP]
set -euo pipefail
group=${1:-plurenet-relay}
command -v az >/dev/null || {
	echo "destroy.sh: the Azure CLI (az) is not installed" >&2
	exit 2
}
az group delete --name "$group" --yes
echo "deleted resource group $group"
