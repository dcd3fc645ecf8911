#!/usr/bin/env bash
# The cost of the access gate, the audit log and metrics on create latency: the same
# sequential creates (POST /v2/sandboxes → 201, then a kill) against a baseline build and
# this build, in alternating rounds, with /metrics scraped every second meanwhile — root;
# release builds.
#   compat/bench_ops.sh BASELINE_BIN [CREATES_PER_ROUND [ROUNDS]]
# BASELINE_BIN: a `soulbox` built from the revision to compare with, e.g.
#   git worktree add /tmp/base 489828c && (cd /tmp/base && cargo build --release)
#   compat/bench_ops.sh /tmp/base/target/x86_64-unknown-linux-gnu/release/soulbox
# Each build gets a data directory of its own (a newer store is not an older build's).
set -euo pipefail
cd "$(dirname "$0")"
new=../target/x86_64-unknown-linux-gnu/release/soulbox
base="${1:?usage: compat/bench_ops.sh BASELINE_BIN [CREATES_PER_ROUND [ROUNDS]]}"
n="${2:-100}"
rounds="${3:-3}"
port="${SOULBOX_COMPAT_PORT:-3922}"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
for b in "$new" "$base"; do
  [ -x "$b" ] && [ -x "$(dirname "$b")/soulbox-agent" ] || { echo "no $b (and soulbox-agent beside it)" >&2; exit 1; }
done
if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then
  echo "127.0.0.1:$port is taken; set SOULBOX_COMPAT_PORT" >&2
  exit 1
fi
work=$(mktemp -d /tmp/bench-ops.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# run NAME BIN: one round of creates against a fresh server of BIN.
run() {
  local data="/var/lib/soulbox-bench-$1"
  SOULBOX_DATA_DIR="$data" "$2" template build tiny >/dev/null
  SOULBOX_ADMIN_API_KEY="$key" SOULBOX_DATA_DIR="$data" "$2" serve --listen "127.0.0.1:$port" \
    --templates "" --warm-pool "" --on-stop kill >>"$work/serve-$1.log" 2>&1 &
  server=$!
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
  python3 bench_ops.py "$port" "$key" "$n" "$work/$1.json"
  kill -TERM "$server"; wait "$server" 2>/dev/null || true
  server=
}
for r in $(seq "$rounds"); do
  echo "round $r/$rounds: baseline, then this build ($n creates each)" >&2
  run base "$base"
  run new "$new"
done
python3 bench_ops.py --report "$work/base.json" "$work/new.json" "$(uptime | sed 's/.*load average: //')"
