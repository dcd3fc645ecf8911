#!/usr/bin/env bash
# Egress benchmark: throughput and added connect latency of the egress proxy (byte relay
# after Host/SNI; TLS terminated for a host with a header rule) beside plain NAT, inside
# sandboxes, against soulbox-testnet (the fake internet) — root; release build.
#   compat/bench_egress.sh [SIZE [CONNECTS]]   # SIZE of each download: bytes, or 512M, 1G, …
#                                              # (1G by default); CONNECTS: new connections
#                                              # timed per path (300 by default)
# Starts and stops its own testnet and `soulbox serve` (no bandwidth limit, --on-stop kill).
set -euo pipefail
cd "$(dirname "$0")"
rel=../target/x86_64-unknown-linux-gnu/release
size=$(numfmt --from=iec "${1:-1G}")
connects="${2:-300}"
port="${SOULBOX_COMPAT_PORT:-3921}"
data="${SOULBOX_DATA_DIR:-/var/lib/soulbox-test}"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[ "$size" -ge 1 ] && [ "$size" -le $((10 << 30)) ] || { echo "SIZE: 1 byte to 10 GiB" >&2; exit 2; }
[ "$connects" -ge 10 ] 2>/dev/null || { echo "CONNECTS: 10 or more" >&2; exit 2; }
for b in soulbox soulbox-testnet soulbox-agent; do
  [ -x "$rel/$b" ] || { echo "no $rel/$b: build the release binaries first" >&2; exit 1; }
done
[ -x .venv-2.63.0/bin/python ] || { python3 -m venv .venv-2.63.0; .venv-2.63.0/bin/pip install -q e2b==2.63.0 pytest; }
if ip netns list 2>/dev/null | grep -w sbxinet >/dev/null; then
  echo "a soulbox-testnet is already up (another run?); if it is a leftover: $rel/soulbox-testnet down" >&2
  exit 1
fi
if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then
  echo "127.0.0.1:$port is taken; set SOULBOX_COMPAT_PORT" >&2
  exit 1
fi

work=$(mktemp -d /tmp/bench-egress.XXXXXX)
tn="$work/testnet"
mkdir "$tn"
testnet= server= bench= ok=
cleanup() {
  if [ -n "$bench" ]; then kill -TERM "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true; fi
  # The server first (--on-stop kill: its sandboxes go with it), then the testnet.
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ -n "$testnet" ]; then kill -TERM "$testnet" 2>/dev/null || true; wait "$testnet" 2>/dev/null || true; fi
  if [ -n "$ok" ]; then
    rm -rf "$work"
  else
    echo "failed; logs kept in $work (serve.log, testnet.log)" >&2
    tail -n 5 "$work/serve.log" "$work/testnet.log" >&2 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s)
"$rel/soulbox-testnet" up --dir "$tn" --parent-pid $$ >"$work/testnet.log" 2>&1 &
testnet=$!
for _ in $(seq 300); do
  [ -e "$tn/ready" ] && break
  kill -0 "$testnet" 2>/dev/null || { echo "soulbox-testnet exited" >&2; exit 1; }
  sleep 0.1
done
[ -e "$tn/ready" ] || { echo "soulbox-testnet not ready in 30 s" >&2; exit 1; }

SOULBOX_ADMIN_API_KEY="$key" SOULBOX_DATA_DIR="$data" SOULBOX_EGRESS_TRUST="$tn/ca.pem" \
  "$rel/soulbox" serve --listen "127.0.0.1:$port" --templates base --warm-pool "" \
  --on-stop kill --egress-rate-mbit 0 >"$work/serve.log" 2>&1 &
server=$!
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
  kill -0 "$server" 2>/dev/null || { echo "soulbox serve exited" >&2; exit 1; }
  sleep 0.05
done

export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key"
unset E2B_DEBUG E2B_DOMAIN
echo "## egress proxy vs NAT ($(date -u +%F), $(nproc) cores, load average $(cut -d" " -f1 /proc/loadavg) at the start, template base, no bandwidth limit, soulbox-testnet)"
echo
# In the background, so that a signal is acted on at once (bash holds traps while a
# foreground command runs).
.venv-2.63.0/bin/python -u bench_egress.py "$size" "$connects" "$tn" &
bench=$!
wait "$bench"
bench=
ok=1
echo "(took $(( $(date +%s) - t0 )) s)" >&2
