#!/usr/bin/env bash
# Everything CI runs, from a fresh machine: checks formatting, the layers
# (scripts/check-layers.sh) and clippy (warnings are errors), installs moto into .venv and the infra linters into
# .venv-infra, lints and scans infra/, checks docs/getting-started.md
# (awscli and shellcheck in .venv-docs), then runs every Rust test (unit,
# property, moto-backed integration, Lambda runtime harness).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Minimal rustup profiles leave these out; the default profile has them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> layers: a pure core crate, no module circle, no file over 600 lines"
scripts/check-layers.sh

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> installing the local AWS emulator (moto)"
scripts/setup-moto.sh

echo "==> linting and scanning infra/ (cfn-lint, checkov, event pattern)"
scripts/lint-infra.sh

echo "==> checking docs/getting-started.md (shell, aws and headroom commands, stack parameters)"
scripts/check-docs.sh

echo "==> cargo test"
cargo test --workspace --locked "$@"
