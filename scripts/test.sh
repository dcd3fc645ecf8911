#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian host, builds, then runs every
# test. Needs root (sandboxes are real namespaces, cgroups and network devices).
set -euo pipefail
cd "$(dirname "$0")/.."

# The lints compile the whole workspace (CPU) while the host packages and CRIU below download and
# install (network): both at once, the lints' verdict read before the build. A formatting
# failure is reported at once.
cargo fmt --all --check
lint_log=$(mktemp)
cargo clippy --release --workspace --all-targets --locked -- -D warnings >"$lint_log" 2>&1 &
lint=$!
# A step that fails leaves nothing of ours running behind it.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

need=()
for cmd in mmdebstrap:mmdebstrap crun:crun nft:nftables ip:iproute2 mkfs.ext4:e2fsprogs unshare:util-linux python3:python3 curl:curl node:nodejs npm:npm tmux:tmux docker-registry:docker-registry skopeo:skopeo umoci:umoci htpasswd:apache2-utils lxcfs:lxcfs dnsmasq:dnsmasq-base chromium:chromium; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd##*:}")
done
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# The image tests pack busybox into an image with no libc: the static build (which replaces
# Debian's dynamic `busybox`, often installed for the initramfs).
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# CRIU 4 for the full-pause tests (built once, from Debian's source).
./scripts/criu.sh

export SOULBOX_TEST_DATA_DIR="${SOULBOX_TEST_DATA_DIR:-/var/lib/soulbox-test}"
# Clippy's verdict before the long runs (in release mode: the same profile as the build).
if ! wait "$lint"; then
  cat "$lint_log"
  echo "cargo clippy failed (above)"
  exit 1
fi
cat "$lint_log"
# The SDK venvs (PyPI) fill while the build compiles; the HTTPS test drives the real Python
# SDK, so they must be ready before cargo test (it must not skip here).
venv_log=$(mktemp)
(./compat/venvs.sh && ./compat/dashboard/venv.sh) >"$venv_log" 2>&1 &
venvs=$!
cargo build --release --workspace --locked
./target/x86_64-unknown-linux-gnu/release/soulbox doctor
# Templates are cached by recipe hash; the first run builds tiny, base and code-interpreter.
SOULBOX_DATA_DIR="$SOULBOX_TEST_DATA_DIR" ./target/x86_64-unknown-linux-gnu/release/soulbox template build tiny
if ! wait "$venvs"; then
  cat "$venv_log"
  echo "making the SDK venvs failed (above)"
  exit 1
fi
SOULBOX_E2B_PYTHON="$PWD/compat/.venv-2.63.0/bin/python" cargo test --release --workspace --locked
# The official E2B SDKs (pinned) against a real `soulbox serve`.
./compat/run.sh
