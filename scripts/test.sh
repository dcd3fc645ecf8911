#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian host, builds, then runs every
# test. Needs root (sandboxes are real namespaces, cgroups and network devices).
set -euo pipefail
cd "$(dirname "$0")/.."

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
# Lints first, so a formatting or clippy failure is reported before the long runs (clippy in
# release mode checks with the same profile as the build below).
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo build --release --workspace --locked
./target/x86_64-unknown-linux-gnu/release/soulbox doctor
# Templates are cached by recipe hash; the first run builds tiny, base and code-interpreter.
SOULBOX_DATA_DIR="$SOULBOX_TEST_DATA_DIR" ./target/x86_64-unknown-linux-gnu/release/soulbox template build tiny
# The HTTPS test drives the real Python SDK too: it must not skip here.
./compat/venvs.sh
SOULBOX_E2B_PYTHON="$PWD/compat/.venv-2.63.0/bin/python" cargo test --release --workspace --locked
# The official E2B SDKs (pinned) against a real `soulbox serve`.
./compat/run.sh
