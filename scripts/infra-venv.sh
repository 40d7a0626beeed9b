# shellcheck shell=bash disable=SC2034  # sourced; sets VENV and PY for the caller
# Sourced by scripts/lint-infra.sh and scripts/plain-template.sh: installs the
# infra tools pinned in scripts/requirements-infra.txt into .venv-infra/
# (override with HEADROOM_INFRA_VENV) on the first run or when the
# requirements change, and sets VENV and PY. Later runs do not touch the
# network. Expects ROOT (the repository).
PYTHON="${PYTHON:-python3}"
VENV="${HEADROOM_INFRA_VENV:-$ROOT/.venv-infra}"
REQUIREMENTS="$ROOT/scripts/requirements-infra.txt"
stamp="$VENV/.requirements.sha256"
want="$({ cat "$REQUIREMENTS"; "$PYTHON" --version 2>&1; } | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  printf '\n==> %s\n' "installing pinned tools into ${VENV#"$ROOT"/} (first run or requirements changed)" >&2
  "$PYTHON" -m venv --clear "$VENV"
  printf '*\n' >"$VENV/.gitignore"   # keep the venv out of git without touching .gitignore
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  printf '%s\n' "$want" >"$stamp"
fi
PY="$VENV/bin/python"
