#!/usr/bin/env bash
# Builds headroom's release artefacts into dist/:
#
#   dist/<function>-<arch>.zip   the three functions (on-alarm, on-prefix-failure,
#                                capacity-check) for arm64 and x86_64, each a
#                                Lambda zip holding one `bootstrap`
#   dist/headroom.yaml           the plain CloudFormation template (SAM transform
#                                already applied) that deploys those zips from a
#                                regional S3 bucket: one stack, or a StackSet
#                                (scripts/plain-template.sh; docs/deploy.md)
#   dist/headroom-linux-<m>      the `headroom` CLI for Linux, <m> as `uname -m`
#                                says it: x86_64, aarch64 (the arm64 build)
#   dist/rbac.sh                 renders the Kubernetes RBAC and admission policy
#                                (bash and the AWS CLI; scripts/rbac.sh, checked
#                                to run on its own, away from the repository)
#   dist/BUILD-INFO.txt          what built them (commit, toolchain, tools)
#   dist/SHA256SUMS              sha256sum -c checks all of the above
#
#   scripts/release.sh                       # everything, both architectures
#   scripts/release.sh --arch x86_64 --function on-alarm --no-cli --allow-dirty
#   scripts/release.sh --list                # the file names dist/ will hold
#   MAX_ZIP_BYTES=4500000 scripts/release.sh # another size limit
#
# Options: --arch arm64|x86_64 and --function NAME (repeatable; default all),
# --no-cli (no CLI binaries), --version V (default: the tag at HEAD, else
# dev-<commit>), --skip-build (package what a previous run left in the build
# directory), --allow-dirty (build from a work tree with uncommitted changes;
# the result is then not the commit's), --list (print the names of the files
# of dist/ for these options, one a line, and build nothing).
#
# Reproducible: the same commit, toolchain and pinned tools give the same
# bytes. SOURCE_DATE_EPOCH is the commit's time; the workspace and
# $CARGO_HOME paths are remapped out of the binaries (rustc
# --remap-path-prefix, and -ffile-prefix-map for the C that aws-lc-sys
# compiles); cargo-lambda's zip stores the binary's mtime and mode, so each zip
# is rewritten with the commit time, mode 0755, deflated by zopfli (same
# format, ~3 % smaller than zlib -9, deterministic; ~1 min per zip).
#
# Fails when a zip is larger than MAX_ZIP_BYTES (default 4,000,000 bytes, the
# size target of the release work). Builds with cargo-lambda and zig from
# scripts/requirements-release.txt, installed into .venv-release/ on the first
# run; a build directory of its own (target/release-lambda) keeps it from
# waiting for, or invalidating, the workspace's usual builds. Nothing here
# talks to AWS; uploading is a separate step (docs/deploy.md, "Install from a
# release").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MAX_ZIP_BYTES="${MAX_ZIP_BYTES:-4000000}"
ALL_FUNCTIONS=(on-alarm on-prefix-failure capacity-check)
ALL_ARCHES=(arm64 x86_64)
DIST="${HEADROOM_DIST:-$ROOT/dist}"
BUILD_DIR="${HEADROOM_RELEASE_TARGET_DIR:-$ROOT/target/release-lambda}"
VENV="${HEADROOM_RELEASE_VENV:-$ROOT/.venv-release}"
REQUIREMENTS="scripts/requirements-release.txt"

functions=() arches=() version="" skip_build=false allow_dirty=false cli=true list=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) arches+=("${2:?--arch takes arm64 or x86_64}"); shift 2 ;;
    --function) functions+=("${2:?--function takes a function name}"); shift 2 ;;
    --version) version="${2:?--version takes a version}"; shift 2 ;;
    --skip-build) skip_build=true; shift ;;
    --allow-dirty) allow_dirty=true; shift ;;
    --no-cli) cli=false; shift ;;
    --list) list=true; shift ;;
    -h|--help) sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done
[[ ${#functions[@]} -gt 0 ]] || functions=("${ALL_FUNCTIONS[@]}")
[[ ${#arches[@]} -gt 0 ]] || arches=("${ALL_ARCHES[@]}")
for f in "${functions[@]}"; do
  [[ " ${ALL_FUNCTIONS[*]} " == *" $f "* ]] || { echo "unknown function $f (${ALL_FUNCTIONS[*]})" >&2; exit 2; }
done
for a in "${arches[@]}"; do
  [[ " ${ALL_ARCHES[*]} " == *" $a "* ]] || { echo "unknown architecture $a (${ALL_ARCHES[*]})" >&2; exit 2; }
done
[[ "$MAX_ZIP_BYTES" =~ ^[0-9]+$ ]] || { echo "MAX_ZIP_BYTES must be a number of bytes" >&2; exit 2; }

step() { printf '\n==> %s\n' "$*"; }

# The CLI's file name says the machine as `uname -m` does, so that a user can
# download `headroom-linux-$(uname -m)`; the functions' zips keep Lambda's names.
cli_machine() { [[ "$1" == arm64 ]] && echo aarch64 || echo x86_64; }

# Every file of dist/ for the chosen functions and architectures.
artefacts() {
  local arch f
  for arch in "${arches[@]}"; do
    for f in "${functions[@]}"; do echo "$f-$arch.zip"; done
  done
  if $cli; then
    for arch in "${arches[@]}"; do echo "headroom-linux-$(cli_machine "$arch")"; done
  fi
  printf '%s\n' headroom.yaml rbac.sh BUILD-INFO.txt SHA256SUMS
}
if $list; then
  artefacts
  exit 0
fi

# ------------------------------------------------------------ what is built
commit="$(git rev-parse HEAD)"
if [[ -n "$(git status --porcelain)" ]]; then
  if ! $allow_dirty; then
    echo "the work tree has uncommitted changes: a release is built from a commit (--allow-dirty to build anyway)" >&2
    exit 1
  fi
  echo "warning: uncommitted changes; these artefacts are not those of commit $commit" >&2
  commit="$commit-dirty"
fi
if [[ -z "$version" ]]; then
  if [[ "${GITHUB_REF_TYPE:-}" == tag && -n "${GITHUB_REF_NAME:-}" ]]; then
    version="$GITHUB_REF_NAME"
  else
    version="$(git describe --tags --exact-match 2>/dev/null || echo "dev-$(git rev-parse --short=12 HEAD)")"
  fi
fi
[[ "$version" =~ ^[A-Za-z0-9._+-]+$ ]] || { echo "version '$version' is not usable in an S3 key" >&2; exit 2; }
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH

# ------------------------------------------------------------------ tools
stamp="$VENV/.requirements.sha256"
want="$({ cat "$REQUIREMENTS"; python3 --version 2>&1; } | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/cargo-lambda" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  step "installing cargo-lambda, zig and zopfli into ${VENV#"$ROOT"/} (first run or requirements changed)"
  python3 -m venv --clear "$VENV"
  printf '*\n' >"$VENV/.gitignore"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  printf '%s\n' "$want" >"$stamp"
fi
# cargo-lambda finds zig as `python3 -m ziglang` from the venv.
export PATH="$VENV/bin:$PATH"

# ------------------------------------------------------------------- build
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
for path in "$ROOT" "$cargo_home"; do
  [[ "$path" != *[[:space:]]* ]] || { echo "path '$path' has a space: RUSTFLAGS cannot remap it" >&2; exit 1; }
done
# RUSTFLAGS, not CARGO_ENCODED_RUSTFLAGS: cargo-lambda appends its
# `-C target-cpu=` to RUSTFLAGS, and the encoded form would override both.
remap_rust="--remap-path-prefix=$ROOT=/headroom --remap-path-prefix=$cargo_home=/cargo"
remap_c="-ffile-prefix-map=$ROOT=/headroom -ffile-prefix-map=$cargo_home=/cargo"
packages=()
for f in "${functions[@]}"; do packages+=(-p "$f"); done

if ! $skip_build; then
  for arch in "${arches[@]}"; do
    flag="--arm64"; [[ "$arch" == x86_64 ]] && flag="--x86-64"
    step "cargo lambda build --release $flag (${functions[*]})"
    start=$SECONDS
    # AWS_LC_SYS_NO_JITTER_ENTROPY: see docs/deploy.md, "Build".
    env RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$remap_rust" \
      CFLAGS="${CFLAGS:+$CFLAGS }$remap_c" \
      AWS_LC_SYS_NO_JITTER_ENTROPY=1 \
      CARGO_TARGET_DIR="$BUILD_DIR" \
      cargo lambda build --release --locked "$flag" --output-format zip \
        --lambda-dir "$BUILD_DIR/lambda/$arch" "${packages[@]}"
    echo "built in $((SECONDS - start)) s"
    if $cli; then
      # Built on its own: in one cargo run with the functions, the CLI's
      # features (kubeconfig) would be unified into the functions' binaries.
      step "cargo lambda build --release $flag (the headroom CLI)"
      start=$SECONDS
      env RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$remap_rust" \
        CFLAGS="${CFLAGS:+$CFLAGS }$remap_c" \
        AWS_LC_SYS_NO_JITTER_ENTROPY=1 \
        CARGO_TARGET_DIR="$BUILD_DIR" \
        cargo lambda build --release --locked "$flag" \
          --lambda-dir "$BUILD_DIR/cli/$arch" -p headroom-cli --bin headroom
      echo "built in $((SECONDS - start)) s"
    fi
  done
fi

# ----------------------------------------------------------------- package
step "dist/: deterministic zips, size limit $MAX_ZIP_BYTES bytes"
rm -rf "$DIST"
mkdir -p "$DIST"
args=() binaries=()
for arch in "${arches[@]}"; do
  for f in "${functions[@]}"; do
    args+=("$BUILD_DIR/lambda/$arch/$f/bootstrap.zip" "$arch" "$DIST/$f-$arch.zip")
  done
  if $cli; then
    binaries+=("$BUILD_DIR/cli/$arch/headroom/bootstrap" "$arch" "$DIST/headroom-linux-$(cli_machine "$arch")")
  fi
done
"$VENV/bin/python" - "$SOURCE_DATE_EPOCH" "$MAX_ZIP_BYTES" "$ROOT" "$cargo_home" "${args[@]}" -- "${binaries[@]}" <<'PY'
import hashlib
import os
import struct
import sys
import time
import zipfile
import zlib

import zopfli.zlib


def write_zip(path, data, stamp):
    """A zip holding `data` as `bootstrap` (mode 0755, the given time),
    deflated by zopfli: the same format zlib writes, about 3 % smaller
    (docs/BENCHMARKS.md, "Size"). zipfile cannot store data deflated
    elsewhere, so the three records are written here (APPNOTE 4.3)."""
    deflated = zopfli.zlib.compress(data, numiterations=5)[2:-4]  # raw deflate: no zlib header, no Adler-32
    crc = zlib.crc32(data)
    name = b"bootstrap"
    dos_time = (stamp[3] << 11) | (stamp[4] << 5) | (stamp[5] // 2)
    dos_date = ((stamp[0] - 1980) << 9) | (stamp[1] << 5) | stamp[2]
    common = (8, dos_time, dos_date, crc, len(deflated), len(data), len(name), 0)  # method 8: deflate
    local = struct.pack("<IHH" + "HHHIIIHH", 0x04034B50, 20, 0, *common) + name
    central = struct.pack(
        "<IHHH" + "HHHIIIHH" + "HHHII", 0x02014B50, (3 << 8) | 20, 20, 0, *common,
        0, 0, 0, 0o100755 << 16, 0,  # comment, disk, internal attributes, Unix mode, local header offset
    ) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(deflated), 0)
    with open(path, "wb") as out:
        out.write(local + deflated + central + end)
    with zipfile.ZipFile(path) as check:  # what Lambda will unpack
        info = check.getinfo("bootstrap")
        if check.read("bootstrap") != data or info.external_attr >> 16 != 0o100755:
            sys.exit(f"{path}: the zip does not read back as written")

epoch, limit, root, cargo_home = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
split = sys.argv.index("--")
rest, clis = sys.argv[5:split], sys.argv[split + 1 :]
# Zip stores local time without a zone, from 1980 on; use the commit time in UTC.
stamp = time.gmtime(max(epoch, 315532800))[:6]
ELF_MACHINE = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64
too_big = []
for source, arch, target in zip(rest[0::3], rest[1::3], rest[2::3]):
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            if names != ["bootstrap"]:
                sys.exit(f"{source}: expected one entry `bootstrap`, found {names}")
            binary = zf.read("bootstrap")
    except FileNotFoundError:
        sys.exit(f"{source} is missing: build it first (without --skip-build)")
    if binary[:4] != b"\x7fELF" or int.from_bytes(binary[18:20], "little") != ELF_MACHINE[arch]:
        sys.exit(f"{source}: not an {arch} ELF binary")
    leaked = [p for p in (root, cargo_home) if p.encode() in binary]
    if leaked:
        print(f"warning: {target} still contains the build path(s) {leaked}", file=sys.stderr)
    write_zip(target, binary, stamp)
    size = len(open(target, "rb").read())
    digest = hashlib.sha256(open(target, "rb").read()).hexdigest()
    verdict = "ok" if size <= limit else f"OVER the limit by {size - limit:,} bytes"
    print(f"{target.rsplit('/', 1)[-1]:36} {size:>11,} bytes {size / 1024:>9,.0f} KiB  "
          f"binary {len(binary) / 1024:>7,.0f} KiB  sha256 {digest}  {verdict}")
    if size > limit:
        too_big.append(target)
if too_big:
    sys.exit(f"{len(too_big)} zip(s) larger than MAX_ZIP_BYTES={limit:,}: " + ", ".join(too_big))
# The CLI binaries: copied as built, mode 0755, the commit's time.
for source, arch, target in zip(clis[0::3], clis[1::3], clis[2::3]):
    try:
        binary = open(source, "rb").read()
    except FileNotFoundError:
        sys.exit(f"{source} is missing: build it first (without --skip-build)")
    if binary[:4] != b"\x7fELF" or int.from_bytes(binary[18:20], "little") != ELF_MACHINE[arch]:
        sys.exit(f"{source}: not an {arch} ELF binary")
    with open(target, "wb") as out:
        out.write(binary)
    os.chmod(target, 0o755)
    os.utime(target, (epoch, epoch))
    print(f"{target.rsplit('/', 1)[-1]:36} {len(binary):>11,} bytes  sha256 {hashlib.sha256(binary).hexdigest()}")
PY

step "dist/rbac.sh: the RBAC and admission policy, without Rust"
# It ships alone: it must render the same from an empty directory as from the
# repository (no file beside it read).
install -m 0755 scripts/rbac.sh "$DIST/rbac.sh"
alone="$(mktemp -d)"
cp "$DIST/rbac.sh" "$alone/rbac.sh"
rbac_args=(--nodeclass headroom --group headroom)
in_repo="$(scripts/rbac.sh "${rbac_args[@]}" 2>/dev/null; echo "exit $?")"
on_its_own="$(cd "$alone" && ./rbac.sh "${rbac_args[@]}" 2>/dev/null; echo "exit $?")"
rm -rf "$alone"
if [[ "$in_repo" != "$on_its_own" ]]; then
  echo "rbac.sh renders differently away from the repository: it must not read files beside it" >&2
  exit 1
fi

step "dist/headroom.yaml: the plain CloudFormation template"
scripts/plain-template.sh --version "$version" --output "$DIST/headroom.yaml"

{
  echo "version: $version"
  echo "commit: $commit"
  echo "source_date_epoch: $SOURCE_DATE_EPOCH"
  echo "rustc: $(rustc --version)"
  echo "cargo-lambda: $(cargo lambda --version 2>/dev/null || echo 'not run (--skip-build)')"
  echo "zig: $(python3 -m ziglang version 2>/dev/null || echo 'not run (--skip-build)')"
  echo "architectures: ${arches[*]}"
  echo "functions: ${functions[*]}"
  echo "cli: $($cli && artefacts | grep '^headroom-linux-' | paste -sd' ' || echo 'not built (--no-cli)')"
  echo "s3 keys: <ArtifactPrefix>/<function>-<arch>.zip, ArtifactPrefix default headroom/$version"
} >"$DIST/BUILD-INFO.txt"

mapfile -t summed < <(artefacts | grep -vx SHA256SUMS)
(cd "$DIST" && sha256sum -- "${summed[@]}" >SHA256SUMS)
step "dist/ (verify with: cd dist && sha256sum -c SHA256SUMS)"
(cd "$DIST" && ls -l)
