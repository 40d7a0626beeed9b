#!/usr/bin/env bash
# Prints headroom's Kubernetes RBAC for a deployment: the ClusterRole limited
# to the deployment's NodeClass, bound to the deployment's Kubernetes group.
#
#   scripts/rbac.sh --stack headroom-demo-cluster | kubectl apply -f -
#   scripts/rbac.sh --nodeclass headroom --group headroom | kubectl apply -f -
#
# --stack reads NodeClassName and KubernetesGroup from the CloudFormation
# stack's parameters (with the AWS CLI and your credentials), so the manifest
# always matches what the stack deployed. Without arguments it prints the
# manifest for the template's defaults, which is infra/rbac.yaml.
set -euo pipefail

nodeclass="headroom"
group="headroom"
stack=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --stack) stack="${2:?--stack takes a stack name}"; shift 2 ;;
    --nodeclass) nodeclass="${2:?--nodeclass takes a NodeClass name}"; shift 2 ;;
    --group) group="${2:?--group takes a Kubernetes group}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done

if [[ -n "$stack" ]]; then
  parameter() {
    aws cloudformation describe-stacks --stack-name "$stack" \
      --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue" --output text
  }
  nodeclass="$(parameter NodeClassName)"
  group="$(parameter KubernetesGroup)"
fi

# Kubernetes names: RFC 1123 subdomains; groups: no newline or quote.
if [[ ! "$nodeclass" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ || "$nodeclass" == "default" ]]; then
  echo "NodeClass name '$nodeclass' is not a custom NodeClass name" >&2; exit 2
fi
if [[ -z "$group" || "$group" == *[$'\n\"']* ]]; then
  echo "Kubernetes group '$group' is not valid" >&2; exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sed -e "s/resourceNames: \[\"headroom\"\]/resourceNames: [\"$nodeclass\"]/" \
    -e "s/^    name: headroom\$/    name: $group/" \
    "$here/infra/rbac.yaml"
