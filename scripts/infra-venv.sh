# shellcheck shell=bash
# Sourced by scripts/lint-infra.sh and scripts/plain-template.sh: the infra
# tools pinned in scripts/requirements-infra.txt, in .venv-infra/ (override
# with HEADROOM_INFRA_VENV); sets VENV and PY. Expects ROOT (the repository).
# shellcheck source=scripts/pinned-venv.sh
source "$ROOT/scripts/pinned-venv.sh"
pinned_venv "${HEADROOM_INFRA_VENV:-$ROOT/.venv-infra}" "$ROOT/scripts/requirements-infra.txt" "pinned tools"
