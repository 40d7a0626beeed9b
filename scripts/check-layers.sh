#!/usr/bin/env bash
# The architecture, held by checks rather than convention (docs/design.md,
# "Layers"):
#   1. the core crate (shared/core, headroom-core) depends on nothing that
#      does I/O: no AWS SDK, smithy, kube, tokio, hyper or lambda_runtime;
#   2. no crate's modules import each other in a circle;
#   3. no production source file is over 600 lines (test files aside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=0

echo "--> headroom-core's normal dependencies"
tree=$(cargo tree --locked -p headroom-core -e normal --prefix none --format '{p}' | sed 's/ (\*)$//' | sort -u)
forbidden=$(grep -E '^(aws-|smithy|kube|k8s-openapi|tokio|hyper|lambda_runtime|aws_lambda_events|reqwest|futures) ' <<<"$tree" || true)
if [[ -n "$forbidden" ]]; then
  echo "headroom-core must not depend on I/O crates; found:" >&2
  sed 's/^/  /' <<<"$forbidden" >&2
  echo "  keep decisions in shared/core and move the code that needs these to the shell (shared/src)" >&2
  failed=1
else
  echo "    $(wc -l <<<"$tree") crates, none of them does I/O"
fi

echo "--> module circles"
python3 scripts/check_module_cycles.py shared/core/src shared/src cli/src || failed=1

echo "--> files over 600 lines"
long=$(find shared cli/src functions -name '*.rs' -not -name 'tests.rs' -not -path '*/tests/*' -print0 |
  xargs -0 wc -l | awk '$2 != "total" && $1 > 600 { print "  " $2 ": " $1 " lines" }')
if [[ -n "$long" ]]; then
  echo "split these by concern (one room, one job):" >&2
  echo "$long" >&2
  failed=1
else
  echo "    none"
fi

exit "$failed"
