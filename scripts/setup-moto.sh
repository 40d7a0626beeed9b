#!/usr/bin/env bash
# Installs the local AWS emulator (moto server) that headroom's tests run against.
#
# Idempotent: creates <repo>/.venv with `python3 -m venv` and installs the pinned
# moto[server] into it, then writes a stamp file naming the pinned version. A second
# run with the same pin and a working binary does nothing.
#
# Override the interpreter with PYTHON=/path/to/python3.
# The testbed finds the binary at <repo>/.venv/bin/moto_server, or wherever
# $HEADROOM_MOTO_SERVER points.
set -euo pipefail

MOTO_VERSION="5.2.5"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv"
STAMP="${VENV}/.headroom-moto-${MOTO_VERSION}"
MOTO_BIN="${VENV}/bin/moto_server"
PYTHON="${PYTHON:-python3}"

if [[ -f "${STAMP}" && -x "${MOTO_BIN}" ]] && "${VENV}/bin/python" -c 'import moto.server' 2>/dev/null; then
    echo "moto ${MOTO_VERSION} already installed: ${MOTO_BIN}"
    exit 0
fi

if ! command -v "${PYTHON}" >/dev/null 2>&1; then
    echo "error: ${PYTHON} not found; install Python 3.9+ (with the venv module) first" >&2
    exit 1
fi

if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "creating virtualenv ${VENV}"
    if ! "${PYTHON}" -m venv "${VENV}"; then
        echo "error: '${PYTHON} -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
        exit 1
    fi
fi

echo "installing moto[server]==${MOTO_VERSION} into ${VENV}"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"

# Remove stamps of other pins so that a pin change always reinstalls.
rm -f "${VENV}"/.headroom-moto-*
"${VENV}/bin/python" -c 'import moto.server' >/dev/null
touch "${STAMP}"
echo "moto ${MOTO_VERSION} installed: ${MOTO_BIN}"
