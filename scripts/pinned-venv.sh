# shellcheck shell=bash disable=SC2034  # sourced; pinned_venv sets VENV and PY for the caller
# Sourced by the scripts that need Python tools: `pinned_venv DIR REQUIREMENTS
# WHAT` installs the tools pinned in REQUIREMENTS into the virtualenv DIR on
# the first run or when the requirements (or the Python) change, and sets
# VENV and PY. Later runs do not touch the network. Expects ROOT (the
# repository).
pinned_venv() {
  local dir="$1" requirements="$2" what="$3"
  local python="${PYTHON:-python3}"
  local stamp="$dir/.requirements.sha256" want
  want="$({ cat "$requirements"; "$python" --version 2>&1; } | sha256sum | cut -d' ' -f1)"
  if [[ ! -x "$dir/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    printf '\n==> %s\n' "installing $what into ${dir#"$ROOT"/} (first run or requirements changed)" >&2
    "$python" -m venv --clear "$dir"
    printf '*\n' >"$dir/.gitignore"   # keep the venv out of git without touching .gitignore
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    printf '%s\n' "$want" >"$stamp"
  fi
  VENV="$dir"
  PY="$dir/bin/python"
}
