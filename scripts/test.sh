#!/usr/bin/env bash
# Everything CI runs, from a fresh machine: installs moto into .venv and the
# infra linters into .venv-infra, lints and scans infra/, then runs every
# Rust test (unit, property, moto-backed integration, Lambda runtime harness).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> installing the local AWS emulator (moto)"
scripts/setup-moto.sh

echo "==> linting and scanning infra/ (cfn-lint, checkov, event pattern)"
scripts/lint-infra.sh

echo "==> cargo test"
cargo test --workspace --locked "$@"
