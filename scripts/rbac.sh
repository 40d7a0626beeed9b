#!/usr/bin/env bash
# Prints headroom's Kubernetes rights for a deployment, as one YAML stream:
# the ClusterRole and its ClusterRoleBinding (the verbs headroom uses, patch
# and watch only on its NodeClass), and a ValidatingAdmissionPolicy with its
# binding (Kubernetes 1.30+) that lets headroom's group create or change only
# its own NodeClass and NodePool: RBAC cannot limit `create` by name.
#
#   scripts/rbac.sh --stack headroom | kubectl apply -f -
#   scripts/rbac.sh --cluster team-a --nodeclass extra-ips --group headroom | kubectl apply -f -
#   scripts/rbac.sh --stack headroom | kubectl delete -f -     # uninstall
#
#   --stack S          read NodeClassName, NodePoolName, KubernetesGroup, NodeRole
#                      and ClusterNames from the stack's parameters (AWS CLI)
#   --cluster C[,C2]   read each cluster (AWS CLI): its Kubernetes version, its
#                      Auto Mode node role and its headroom.io/nodeclass and
#                      headroom.io/nodepool tags; default: the stack's ClusterNames
#   --nodeclass N[,N2] --nodepool P[,P2] --group G --node-role R[,R2] (names or ARNs)
#   --name X           name of the four cluster-scoped objects; default: the
#                      stack's name with --stack, else headroom
#
# Flags given explicitly win over what --stack and --cluster read. Without
# arguments it prints infra/rbac.yaml: the template's defaults, and the node
# role EKS names AmazonEKSAutoNodeRole.
set -euo pipefail

# The names the template accepts (infra/template.yaml, AllowedPattern).
# Bash has no look-ahead, so each `(?!...)` is a separate check; a test
# rebuilds the template's patterns from these.
readonly NAME_PATTERN='^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$'
readonly RESERVED_NODECLASSES='default'
readonly RESERVED_NODEPOOLS='general-purpose system'
readonly GROUP_PATTERN='^[A-Za-z0-9][A-Za-z0-9:._-]*$'
readonly GROUP_RESERVED_PREFIX='system:'
# IAM role names (iam:CreateRole RoleName).
readonly ROLE_PATTERN='^[A-Za-z0-9+=,.@_-]{1,64}$'
# The node role EKS creates for Auto Mode under this name in its console and
# guides; the rendering without --cluster, --stack or --node-role allows it.
readonly DEFAULT_NODE_ROLE='AmazonEKSAutoNodeRole'
# ValidatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1) from 1.30.
readonly POLICY_MIN_MINOR=30
readonly TAG_NODECLASS='headroom.io/nodeclass'
readonly TAG_NODEPOOL='headroom.io/nodepool'

die() { echo "rbac.sh: $*" >&2; exit 2; }
warn() { echo "rbac.sh: warning: $*" >&2; }
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

stack="" name="" group="" nodeclasses="" nodepools="" node_roles="" clusters=""
append() { if [[ -n "$1" ]]; then echo "$1,$2"; else echo "$2"; fi; }
while [[ $# -gt 0 ]]; do
  [[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
  [[ $# -ge 2 && -n "$2" ]] || die "$1 takes a value; see --help"
  case "$1" in
    --stack) stack="$2" ;;
    --cluster) clusters="$(append "$clusters" "$2")" ;;
    --nodeclass) nodeclasses="$(append "$nodeclasses" "$2")" ;;
    --nodepool) nodepools="$(append "$nodepools" "$2")" ;;
    --group) group="$2" ;;
    --node-role) node_roles="$(append "$node_roles" "$2")" ;;
    --name) name="$2" ;;
    *) die "unknown argument $1; see --help" ;;
  esac
  shift 2
done

# Words of a comma-separated list, trimmed, without empties or repeats, in order.
words() { tr ',' '\n' <<<"$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | awk 'NF && !seen[$0]++'; }
# A role name from a role name or ARN (arn:aws:iam::1:role/path/Name -> Name).
role_name() { echo "${1##*/}"; }

# What the stack deployed; explicit flags win.
stack_nodeclass="headroom" stack_nodepool="headroom" stack_node_role=""
if [[ -n "$stack" ]]; then
  command -v aws >/dev/null || die "--stack needs the AWS CLI"
  parameters="$(aws cloudformation describe-stacks --stack-name "$stack" \
    --query 'Stacks[0].Parameters[].[ParameterKey,ParameterValue]' --output text)" \
    || die "cannot read stack $stack (aws cloudformation describe-stacks failed)"
  while IFS=$'\t' read -r key value; do
    if [[ "$value" == "None" || -z "$value" ]]; then continue; fi
    case "$key" in
      NodeClassName) stack_nodeclass="$value" ;;
      NodePoolName) stack_nodepool="$value" ;;
      KubernetesGroup) group="${group:-$value}" ;;
      NodeRole) stack_node_role="$value" ;;
      ClusterNames) clusters="${clusters:-$value}" ;;
    esac
  done <<<"$parameters"
  [[ -n "$name" ]] || name="$stack"
fi
group="${group:-headroom}"
name="${name:-headroom}"

# Each cluster's names (its tags, else the stack's), node role and version.
cluster_nodeclasses="" cluster_nodepools="" cluster_roles="" old_clusters=""
while IFS= read -r cluster; do
  command -v aws >/dev/null || die "--cluster needs the AWS CLI"
  described="$(aws eks describe-cluster --name "$cluster" --output text --query \
    "[cluster.version, cluster.computeConfig.nodeRoleArn, cluster.tags.\"$TAG_NODECLASS\", cluster.tags.\"$TAG_NODEPOOL\"]")" \
    || die "cannot read cluster $cluster (aws eks describe-cluster failed)"
  IFS=$'\t' read -r version role_arn tag_nodeclass tag_nodepool <<<"$described"
  if [[ "$tag_nodeclass" == "None" || -z "$tag_nodeclass" ]]; then tag_nodeclass="$stack_nodeclass"; fi
  if [[ "$tag_nodepool" == "None" || -z "$tag_nodepool" ]]; then tag_nodepool="$stack_nodepool"; fi
  cluster_nodeclasses="$(append "$cluster_nodeclasses" "$tag_nodeclass")"
  cluster_nodepools="$(append "$cluster_nodepools" "$tag_nodepool")"
  if [[ -n "$role_arn" && "$role_arn" != "None" ]]; then
    cluster_roles="$(append "$cluster_roles" "$(role_name "$role_arn")")"
  else
    warn "cluster $cluster has no Auto Mode node role (computeConfig.nodeRoleArn)"
  fi
  if [[ "$version" =~ ^1\.([0-9]+)$ ]] && (( BASH_REMATCH[1] < POLICY_MIN_MINOR )); then
    old_clusters="$(append "$old_clusters" "$cluster ($version)")"
  fi
done < <(words "$clusters")

[[ -n "$nodeclasses" ]] || nodeclasses="${cluster_nodeclasses:-$stack_nodeclass}"
[[ -n "$nodepools" ]] || nodepools="${cluster_nodepools:-$stack_nodepool}"
if [[ -z "$node_roles" ]]; then
  node_roles="$cluster_roles"
  if [[ -n "$stack_node_role" ]]; then node_roles="$(append "$node_roles" "$stack_node_role")"; fi
fi
if [[ -z "$node_roles" ]]; then
  node_roles="$DEFAULT_NODE_ROLE"
  if [[ -n "$stack$clusters" ]]; then
    warn "no node role known (no cluster with computeConfig.nodeRoleArn, NodeRole empty):" \
      "allowing $DEFAULT_NODE_ROLE; give --node-role if the cluster's node role has another name"
  fi
fi

# Validate, as the template does.
valid_name() { [[ "$1" =~ $NAME_PATTERN ]]; }
while IFS= read -r n; do
  valid_name "$n" && [[ " $RESERVED_NODECLASSES " != *" $n "* ]] \
    || die "NodeClass name '$n' is not a custom NodeClass name (an RFC 1123 name other than: $RESERVED_NODECLASSES)"
done < <(words "$nodeclasses")
while IFS= read -r n; do
  valid_name "$n" && [[ " $RESERVED_NODEPOOLS " != *" $n "* ]] \
    || die "NodePool name '$n' is not a custom NodePool name (an RFC 1123 name other than: $RESERVED_NODEPOOLS)"
done < <(words "$nodepools")
[[ "$group" =~ $GROUP_PATTERN && "$group" != "$GROUP_RESERVED_PREFIX"* ]] \
  || die "Kubernetes group '$group' is not valid: it must match $GROUP_PATTERN and not start with $GROUP_RESERVED_PREFIX (EKS rejects it)"
valid_name "$name" || die "name '$name' is not an RFC 1123 name for the cluster-scoped objects; give --name"
roles=""
while IFS= read -r r; do
  r="$(role_name "$r")"
  [[ "$r" =~ $ROLE_PATTERN ]] || die "node role '$r' is not an IAM role name"
  roles="$(append "$roles" "$r")"
done < <(words "$node_roles")

# `["a", "b"]` for YAML, `['a', 'b']` for CEL; the names hold no quotes.
list() { words "$2" | awk -v q="$1" '{ printf "%s%s%s%s", (NR > 1 ? ", " : ""), q, $0, q } END { print "" }'; }
spaced() { words "$1" | paste -sd',' | sed 's/,/, /g'; }
yaml_nodeclasses="[$(list '"' "$nodeclasses")]"
cel_nodeclasses="[$(list "'" "$nodeclasses")]"
cel_nodepools="[$(list "'" "$nodepools")]"
cel_roles="[$(list "'" "$roles")]"
cel_group="'$group'"

cat <<EOF
# Kubernetes rights of headroom, rendered by scripts/rbac.sh.
#
# The EKS access entry in infra/template.yaml maps the functions' IAM role to
# a Kubernetes group (parameter KubernetesGroup) and associates no EKS access
# policy: this stream is the whole of headroom's access to the Kubernetes API.
# Apply it once per cluster, rendered for the stack (its NodeClassName,
# NodePoolName, KubernetesGroup, NodeRole and each cluster's node role and
# tags):
#
#   scripts/rbac.sh --stack <stack name> | kubectl apply -f -
#
# This file is the rendering without arguments: the template's defaults
# (NodeClass, NodePool and group \`headroom\`) and the Auto Mode node role
# named AmazonEKSAutoNodeRole, as the EKS console creates it. If your
# cluster's node role has another name, render with --cluster or --node-role:
# otherwise the admission policy refuses headroom's new NodeClass, saying
# which role it expects. A test checks that this file is the script's output.
#
# RBAC: the verbs headroom calls, no update and no delete. RBAC cannot limit
# create by name, so the ValidatingAdmissionPolicy below (Kubernetes 1.30+)
# does: for requests from headroom's group only, a NodeClass or NodePool may
# be created or changed only under headroom's names, a NodeClass only with
# the cluster's node role, a NodePool only on headroom's NodeClass.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: headroom
    app.kubernetes.io/component: remediation
rules:
  # NodeClass (eks.amazonaws.com/v1, cluster-scoped).
  # list: inventory and verification - every NodeClass, because capacity is
  #   judged on the status.subnets of the NodeClasses that NodePools reference;
  #   the built-in \`default\` one also gives a new NodeClass its role and
  #   security-group selectors.
  # get: re-read the managed NodeClass while extending it and before
  #   watching its status.subnets for the new subnets.
  - apiGroups: ["eks.amazonaws.com"]
    resources: ["nodeclasses"]
    verbs: ["get", "list"]
  # create: the managed NodeClass does not exist yet. RBAC cannot limit create
  #   by name (the object has no name until the request): the admission
  #   policy below does.
  - apiGroups: ["eks.amazonaws.com"]
    resources: ["nodeclasses"]
    verbs: ["create"]
  # patch: add selector terms with an RFC 6902 JSON Patch whose \`test\` op guards
  #   against a concurrent edit of the list it extends.
  # watch: wait for Auto Mode to list the new subnets in the NodeClass status
  #   (a watch with fieldSelector metadata.name=<name>, which resourceNames
  #   authorises). Without it headroom polls instead.
  # Restricted to the managed NodeClass by name, so the RBAC itself forbids
  # editing the EKS-managed \`default\` NodeClass.
  - apiGroups: ["eks.amazonaws.com"]
    resources: ["nodeclasses"]
    resourceNames: $yaml_nodeclasses
    verbs: ["patch", "watch"]
  # NodePool (karpenter.sh/v1).
  # list: which NodePools launch from which NodeClass: new subnets count only
  #   if a NodePool uses the NodeClass that selects them.
  # create: the NodePool for the managed NodeClass, when none references it
  #   (CreateNodePool). headroom never changes or deletes a NodePool.
  - apiGroups: ["karpenter.sh"]
    resources: ["nodepools"]
    verbs: ["list", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: headroom
    app.kubernetes.io/component: remediation
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: $name
subjects:
  # The group the EKS access entry (KubernetesGroups) puts the role in.
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: $group
EOF

if [[ -n "$old_clusters" ]]; then
  warn "Kubernetes older than 1.$POLICY_MIN_MINOR on $(spaced "$old_clusters"):" \
    "the ValidatingAdmissionPolicy is left out, so headroom's group may create any NodeClass" \
    "(any node role, any selectors) and any NodePool (any weight); only RBAC limits it." \
    "Render newer clusters separately (--cluster) to keep the policy there."
  exit 0
fi

cat <<EOF
---
# Only headroom's requests (matchConditions on its group), only creates and
# updates of NodeClasses and NodePools; everyone else is untouched. A denial
# is a 403 naming this policy.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: headroom
    app.kubernetes.io/component: remediation
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["eks.amazonaws.com"]
        apiVersions: ["*"]
        operations: ["CREATE", "UPDATE"]
        resources: ["nodeclasses"]
      - apiGroups: ["karpenter.sh"]
        apiVersions: ["*"]
        operations: ["CREATE", "UPDATE"]
        resources: ["nodepools"]
  matchConditions:
    - name: headroom-group
      expression: "has(request.userInfo.groups) && $cel_group in request.userInfo.groups"
  validations:
    - expression: "request.resource.resource != 'nodeclasses' || object.metadata.name in $cel_nodeclasses"
      reason: Forbidden
      message: "headroom may create or change only the NodeClass $(spaced "$nodeclasses") (scripts/rbac.sh --nodeclass)"
    # The role is immutable: an update keeps the one the NodeClass has.
    - expression: >-
        request.resource.resource != 'nodeclasses' ||
        (has(object.spec) && has(object.spec.role) &&
        (object.spec.role in $cel_roles ||
        (request.operation == 'UPDATE' && has(oldObject.spec) && has(oldObject.spec.role) &&
        object.spec.role == oldObject.spec.role)))
      reason: Forbidden
      message: "a NodeClass headroom creates must have spec.role $(spaced "$roles"), the cluster's node role (scripts/rbac.sh --cluster or --node-role)"
    - expression: "request.resource.resource != 'nodepools' || object.metadata.name in $cel_nodepools"
      reason: Forbidden
      message: "headroom may create or change only the NodePool $(spaced "$nodepools") (scripts/rbac.sh --nodepool)"
    - expression: >-
        request.resource.resource != 'nodepools' ||
        (has(object.spec) && has(object.spec.template) && has(object.spec.template.spec) &&
        has(object.spec.template.spec.nodeClassRef) &&
        has(object.spec.template.spec.nodeClassRef.name) &&
        object.spec.template.spec.nodeClassRef.name in $cel_nodeclasses &&
        (!has(object.spec.template.spec.nodeClassRef.group) || object.spec.template.spec.nodeClassRef.group == 'eks.amazonaws.com') &&
        (!has(object.spec.template.spec.nodeClassRef.kind) || object.spec.template.spec.nodeClassRef.kind == 'NodeClass'))
      reason: Forbidden
      message: "a NodePool headroom creates must launch from the NodeClass $(spaced "$nodeclasses") (spec.template.spec.nodeClassRef)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: headroom
    app.kubernetes.io/component: remediation
spec:
  policyName: $name
  validationActions: [Deny]
EOF
