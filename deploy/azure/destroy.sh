#!/usr/bin/env bash
# Deletes the resource group deploy.sh created, and everything in it.
#
#   ./destroy.sh [RESOURCE_GROUP]
set -euo pipefail
group=${1:-plurenet-relay}
az group delete --name "$group" --yes
