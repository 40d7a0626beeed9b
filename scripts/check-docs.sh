#!/usr/bin/env bash
# Checks that docs/getting-started.md runs as written (scripts/check_docs.py):
# every shell block parses and passes shellcheck, every `aws` command and
# flag exists in the AWS CLI's own command table (and every `aws lambda
# invoke` has --cli-read-timeout 0), every `headroom` command and flag in the
# CLI's --help, every stack parameter in the template, every file downloaded
# from a release in `scripts/release.sh --list`. First checks the checker on
# known good and broken snippets.
#
#   scripts/check-docs.sh                 # docs/getting-started.md
#   scripts/check-docs.sh docs/deploy.md  # any other page
#
# Installs awscli and shellcheck (scripts/requirements-docs.txt) into
# .venv-docs/ on the first run (override with HEADROOM_DOCS_VENV) and builds
# the debug `headroom` CLI. Nothing contacts AWS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/pinned-venv.sh
source scripts/pinned-venv.sh
pinned_venv "${HEADROOM_DOCS_VENV:-$ROOT/.venv-docs}" scripts/requirements-docs.txt "awscli and shellcheck"

cargo build --quiet --locked -p headroom-cli --bin headroom
headroom="${CARGO_TARGET_DIR:-$ROOT/target}/debug/headroom"

# The AWS CLI reads no credentials and calls nothing here; keep it that way.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE
release_files="$(mktemp)"
trap 'rm -f "$release_files"' EXIT
scripts/release.sh --list >"$release_files"   # what a download from a release may name
checker=("$VENV/bin/python" scripts/check_docs.py --headroom "$headroom" --shellcheck "$VENV/bin/shellcheck")
"${checker[@]}" --self-test
[[ $# -gt 0 ]] || set -- docs/getting-started.md
"${checker[@]}" --release-files "$release_files" "$@"
