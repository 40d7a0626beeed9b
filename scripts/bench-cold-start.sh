#!/usr/bin/env bash
# Cold init and size of the three function binaries against a hello-world
# lambda_runtime function built the same way (tests/bench-hello: same
# lambda_runtime/tokio versions and features, same release profile).
#
#   scripts/bench-cold-start.sh [--runs N] [--skip-build] [--json FILE] [--env KEY=VALUE]...
#
# Builds the release binaries (fat LTO, codegen-units=1: 10-20 minutes
# from scratch on 2 cores), then measures spawn → first
# GET /2018-06-01/runtime/invocation/next on a local Runtime API, N runs each
# (default 10, after one warm-up round), and prints a Markdown table (median,
# ratio to hello world, peak RSS, binary and bootstrap.zip sizes).
# Nothing contacts AWS: no event is sent and the AWS endpoint is a closed
# local port. --env adds a variable to every process, e.g.
# --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=10
BUILD=1
JSON=()
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --skip-build) BUILD=0; shift ;;
        --json) JSON=(--json "$2"); shift 2 ;;
        --env) EXTRA+=(--env "$2"); shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

FUNCTIONS=(on-alarm on-prefix-failure capacity-check)
if [[ ${BUILD} == 1 ]]; then
    # Only the function packages: their features are then resolved the way a
    # per-function deployment build resolves them, without the testbed's.
    # AWS_LC_SYS_NO_JITTER_ENTROPY=1: aws-lc's jitter entropy source is built
    # without optimisation and is slow to build; the kernel's getrandom is used.
    pkgs=()
    for f in "${FUNCTIONS[@]}"; do pkgs+=(-p "$f"); done
    echo "==> cargo build --release ${pkgs[*]}" >&2
    AWS_LC_SYS_NO_JITTER_ENTROPY=1 cargo build --release "${pkgs[@]}"
    echo "==> cargo build --release (tests/bench-hello)" >&2
    cargo build --release --manifest-path tests/bench-hello/Cargo.toml --target-dir target
    echo "==> cargo build -p headroom-testbed --bin bench_cold_start" >&2
    cargo build -p headroom-testbed --bin bench_cold_start
fi

bins=("hello-world=target/release/bench-hello")
for f in "${FUNCTIONS[@]}"; do bins+=("$f=target/release/$f"); done
echo "==> ${RUNS} cold starts each on $(nproc) cores" >&2
exec target/debug/bench_cold_start --runs "${RUNS}" "${JSON[@]}" "${EXTRA[@]}" "${bins[@]}"
