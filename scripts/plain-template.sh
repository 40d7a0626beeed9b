#!/usr/bin/env bash
# Writes the plain CloudFormation template of a release: infra/template.yaml
# with the SAM transform applied and every function's code taken from
#   s3://<ArtifactBucketPrefix>-<Region>/<ArtifactPrefix>/<function>-<Architecture>.zip
# (parameters of the generated template). One template for a single stack
# and for a StackSet; see scripts/plain_template.py for what changes, and
# docs/deploy.md for how to deploy it.
#
#   scripts/plain-template.sh --version v0.2.0 --output dist/headroom.yaml
#
# scripts/release.sh runs it into dist/; scripts/lint-infra.sh runs it into a
# temporary directory and lints the result. Offline (the transform runs
# locally); the tools come from .venv-infra, installed on the first run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/infra-venv.sh
source "$ROOT/scripts/infra-venv.sh"
# The transform wants a Region to exist (for the pseudo parameters it can
# resolve); the output must not depend on it, which lint-infra.sh checks by
# generating the template in two Regions. No credentials: nothing is called.
export AWS_DEFAULT_REGION="${HEADROOM_TRANSFORM_REGION:-us-west-2}" AWS_REGION="${HEADROOM_TRANSFORM_REGION:-us-west-2}"
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
exec "$PY" "$ROOT/scripts/plain_template.py" "$@"
