#!/usr/bin/env bash
# Lint and scan headroom's infrastructure-as-code, offline.
#
#   1. cfn-lint on infra/template.yaml (the SAM template as written), with the
#      serverless rules of cfn-lint-serverless appended;
#   2. the SAM transform (aws-sam-translator, locally) and cfn-lint on its
#      output: cfn-lint skips some rules on SAM templates, e.g. W3037, which
#      checks that every IAM action exists;
#   3. checkov on infra/ (CloudFormation and the Kubernetes RBAC manifest);
#   4. scripts/test_event_pattern.py: the CloudTrail rule's EventPattern against
#      samplecli-events/ in moto's EventBridge;
#   5. the plain CloudFormation template of a release (scripts/plain-template.sh,
#      what dist/headroom.yaml is: a stack or a StackSet deploys it): generated
#      in two Regions (the bytes must not differ), cfn-lint on it, and checkov
#      on it with every Fn::If on its true branch, because checkov does not look
#      inside Fn::If (the IPAM and VPC-access policies, the monitoring link, the
#      single-cluster alarms);
#   6. scripts/test_template.py on the SAM template and on the plain one: the
#      template evaluated for one cluster and then two (a second cluster must
#      delete, rename or replace nothing of the first), and the IAM scopes a
#      linter cannot judge (subnet tag keys, capacity-alarm names, the topic's
#      KMS key).
#
# Every step must be clean. Findings are fixed or suppressed inline with a
# reason (cfn-lint: Metadata cfn-lint config ignore_checks; checkov: Metadata
# checkov skip in the template, checkov.io/skip annotations in Kubernetes YAML).
#
# Tools are pinned in scripts/requirements-infra.txt and installed into
# .venv-infra/ (override with HEADROOM_INFRA_VENV) on the first run or when the
# requirements change; later runs do not touch the network. Nothing here talks
# to AWS: the SAM transform runs locally, moto is in-process, checkov runs with
# --skip-download and without an API key. When the kernel allows it, steps 2-4
# run in an empty network namespace, which proves it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TEMPLATE="infra/template.yaml"

step() { printf '\n==> %s\n' "$*"; }

# ------------------------------------------------------------------ tools
# shellcheck source=scripts/infra-venv.sh
source scripts/infra-venv.sh

# Fake credentials and region: nothing below may reach real AWS.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_DEFAULT_REGION=us-west-2 AWS_REGION=us-west-2
unset AWS_PROFILE AWS_ENDPOINT_URL
# checkov: no platform mapping/guideline download, no PyPI version check.
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
unset BC_API_KEY PRISMA_API_URL

# Run offline in a new network namespace where the kernel allows it.
offline=()
if command -v unshare >/dev/null 2>&1 && unshare -rn true 2>/dev/null; then
  offline=(unshare -rn)
fi
run_offline() { ${offline[@]+"${offline[@]}"} "$@"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ------------------------------------------------------------ 1. cfn-lint
step "cfn-lint $TEMPLATE"
# All rules including the informational ones (-c I); any finding fails the run.
SERVERLESS_RULES=(--append-rules cfn_lint_serverless.rules)
"$VENV/bin/cfn-lint" --include-checks I --non-zero-exit-code informational "${SERVERLESS_RULES[@]}" -- "$TEMPLATE"
echo "cfn-lint (with the serverless rules): clean"

# ------------------------------------------- 2. SAM transform + cfn-lint
step "SAM transform of $TEMPLATE, then cfn-lint on the result"
run_offline "$PY" - "$TEMPLATE" "$work/template.json" <<'PY'
import json
import sys

from cfnlint.decode import decode
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

source, target = sys.argv[1], sys.argv[2]
template, errors = decode(source)
if errors or template is None:
    sys.exit(f"cannot parse {source}: {[str(e) for e in errors]}")

# `sam package` replaces the local CodeUri with an S3 location before the
# transform runs in CloudFormation; do the same with a placeholder.
template.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://placeholder/headroom.zip"


class NoManagedPolicies:
    """The template names no managed policy by name, so none needs resolving."""

    def load(self):
        return {}


try:
    expanded = transform(template, {}, NoManagedPolicies())
except InvalidDocumentException as exc:
    for cause in exc.causes:
        print(f"SAM: {cause.message}", file=sys.stderr)
    sys.exit(1)
with open(target, "w") as fh:
    json.dump(expanded, fh, indent=1)
kinds = sorted({r["Type"] for r in expanded["Resources"].values()})
print(f"SAM transform: {len(expanded['Resources'])} resources ({', '.join(kinds)})")
PY
# Informational rules included, e.g. I3510 (statement resources fit the actions).
"$VENV/bin/cfn-lint" --include-checks I --non-zero-exit-code informational "${SERVERLESS_RULES[@]}" -- "$work/template.json"
echo "cfn-lint (transformed, with the serverless rules): clean"

# --------------------------------------------------------------- 3. checkov
step "checkov infra/ (cloudformation, kubernetes)"
CKV_PARSE_ERROR_FAIL=true run_offline timeout 600 "$VENV/bin/checkov" \
  --directory infra \
  --framework cloudformation kubernetes \
  --skip-download --quiet --compact \
  --output cli --output json --output-file-path "console,$work/checkov.json"
# checkov passes when it parses nothing; make sure both files were really scanned.
"$PY" - "$work/checkov.json" <<'PY'
import json
import sys

reports = json.load(open(sys.argv[1]))
reports = reports if isinstance(reports, list) else [reports]
seen = {r.get("check_type"): r.get("summary", {}) for r in reports}
bad = False
for framework in ("cloudformation", "kubernetes"):
    s = seen.get(framework)
    if not s or not s.get("resource_count") or s.get("parsing_errors"):
        print(f"checkov: {framework}: nothing scanned or parse errors: {s}", file=sys.stderr)
        bad = True
    else:
        print(f"checkov {framework}: {s['resource_count']} resources, {s['passed']} passed, "
              f"{s['failed']} failed, {s['skipped']} skipped (inline suppressions, each with its reason)")
sys.exit(1 if bad else 0)
PY

# ------------------------------------------------- 4. event-pattern test
step "CloudTrail rule EventPattern vs samplecli-events/ (moto EventBridge)"
run_offline "$PY" scripts/test_event_pattern.py --template "$TEMPLATE"

# ------------------------------------- 5. the release's plain template
step "plain CloudFormation template (scripts/plain-template.sh), then cfn-lint and checkov"
mkdir -p "$work/plain" "$work/scan"
HEADROOM_TRANSFORM_REGION=us-west-2 run_offline scripts/plain-template.sh \
  --version v0.0.0-lint --output "$work/plain/headroom.yaml"
HEADROOM_TRANSFORM_REGION=eu-central-1 run_offline scripts/plain-template.sh \
  --version v0.0.0-lint --output "$work/plain/headroom-eu-central-1.yaml" >/dev/null
# A StackSet deploys one template to every Region: nothing of the Region the
# transform ran in may end up in it.
cmp "$work/plain/headroom.yaml" "$work/plain/headroom-eu-central-1.yaml"
echo "same template whichever Region the transform runs in"
"$VENV/bin/cfn-lint" --include-checks I --non-zero-exit-code informational "${SERVERLESS_RULES[@]}" -- "$work/plain/headroom.yaml"
echo "cfn-lint (plain template, with the serverless rules): clean"
run_offline scripts/plain-template.sh --version v0.0.0-lint --all-options \
  --output "$work/scan/headroom-all-options.yaml" >/dev/null
CKV_PARSE_ERROR_FAIL=true run_offline timeout 600 "$VENV/bin/checkov" \
  --file "$work/scan/headroom-all-options.yaml" \
  --framework cloudformation \
  --skip-download --quiet --compact \
  --output cli --output json --output-file-path "console,$work/checkov-plain.json"
"$PY" - "$work/checkov-plain.json" <<'PY'
import json
import sys

reports = json.load(open(sys.argv[1]))
reports = reports if isinstance(reports, list) else [reports]
s = next((r.get("summary", {}) for r in reports if r.get("check_type") == "cloudformation"), {})
if not s.get("resource_count") or s.get("parsing_errors") or s.get("failed"):
    sys.exit(f"checkov (plain template, all options): nothing scanned, parse errors or failures: {s}")
print(f"checkov (plain template, every option on): {s['resource_count']} resources, {s['passed']} passed, "
      f"{s['failed']} failed, {s['skipped']} skipped (the template's inline suppressions)")
PY

# ------------------------------- 6. what CloudFormation would do with it
step "template evaluated: adding clusters, IAM scopes (scripts/test_template.py)"
run_offline "$PY" scripts/test_template.py "$TEMPLATE" "$work/plain/headroom.yaml"

step "infra lint: all clean"
