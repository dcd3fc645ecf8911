#!/usr/bin/env bash
# Sets SoulBox up on a fresh Debian host (as root): host packages, a release build installed to
# /usr/local/bin, the `base` template, then `soulbox doctor`.
set -euo pipefail
cd "$(dirname "$0")/.."

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap nftables iproute2 e2fsprogs util-linux lxcfs >/dev/null
# CRIU 4, for full pauses (processes and memory kept); without it pauses keep files only.
./scripts/criu.sh
cargo build --release --workspace --locked
install -m 0755 target/x86_64-unknown-linux-gnu/release/soulbox target/x86_64-unknown-linux-gnu/release/soulbox-agent /usr/local/bin/
soulbox doctor
soulbox template build base
echo
echo "SoulBox is installed. Try: soulbox run -- 'uname -a; id; python3 --version'"
