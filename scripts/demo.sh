#!/usr/bin/env bash
# The lab's scenario, remediated end to end on the embedded default: moto as
# AWS and a local Kubernetes API, before and after shown. Extra arguments go
# to the demo (--mode pods, --dry-run, --latency-ms N, --serve).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-moto.sh >/dev/null
exec cargo run --quiet -p headroom-testbed --bin demo -- "$@"
