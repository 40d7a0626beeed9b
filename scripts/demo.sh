#!/usr/bin/env bash
# The lab's scenario, remediated end to end on the embedded default: moto as
# AWS and a local Kubernetes API, before and after shown, through the CLI. Extra arguments go
# to the demo (--mode pods, --dry-run, --latency-ms N, --serve).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-moto.sh >/dev/null
# The demo drives the `headroom` CLI, which it finds next to itself.
cargo build --quiet -p headroom-cli --bin headroom
exec cargo run --quiet -p headroom-testbed --bin demo -- "$@"
