#!/usr/bin/env bash
# Builds the CRIU that full pauses use (docs/persistence.md) and installs it as
# /usr/local/sbin/criu: 4.1.1 from Debian's source (Debian 12's own 3.17 fails on current
# kernels), with two patches of ours (scripts/criu/*.patch): rlimits read from /proc when the
# host withholds CAP_SYS_RESOURCE from root, and CRIU_USERNS_OWNER, so a restored sandbox's user
# namespace belongs to the sandbox's own host uid, not to root. Idempotent; about half a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.1.1
STAMP="$VERSION+soulbox3"
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
URL="http://deb.debian.org/debian/pool/main/c/criu/criu_${VERSION}.orig.tar.xz"
STAMP_FILE=/usr/local/lib/soulbox/criu.version

if [ -x /usr/local/sbin/criu ] && [ "$(cat "$STAMP_FILE" 2>/dev/null)" = "$STAMP" ]; then
  echo "criu $STAMP is installed"
  exit 0
fi
echo "building criu $STAMP (for full pauses)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkgconf libbsd-dev libcap-dev \
  libnet1-dev libnl-3-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler uuid-dev \
  libgnutls28-dev libnftables-dev python3-protobuf curl xz-utils >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL -o "$work/criu.tar.xz" "$URL"
echo "$SHA256  $work/criu.tar.xz" | sha256sum -c --quiet
tar -xJf "$work/criu.tar.xz" -C "$work"
src="$work/criu-$VERSION"
for p in scripts/criu/*.patch; do
  patch -s -p1 -d "$src" < "$p"
done
make -s -C "$src" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
install -D -m 0755 "$src/criu/criu" /usr/local/sbin/criu
mkdir -p "$(dirname "$STAMP_FILE")"
echo "$STAMP" > "$STAMP_FILE"
/usr/local/sbin/criu --version | head -1
