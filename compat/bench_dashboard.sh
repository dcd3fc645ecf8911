#!/usr/bin/env bash
# The dashboard's load times in headless Chromium against a fresh `soulbox serve` (root;
# release build; Debian's chromium). Prints the README's table.
set -euo pipefail
cd "$(dirname "$0")"
bin=../target/x86_64-unknown-linux-gnu/release/soulbox
port="${SOULBOX_COMPAT_PORT:-3919}"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
./dashboard/venv.sh
SOULBOX_ADMIN_API_KEY="$key" "$bin" serve --listen "127.0.0.1:$port" --templates "${SOULBOX_COMPAT_TEMPLATE:-base}" >bench-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break || sleep 0.5; done
SOULBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key" .venv-dashboard/bin/python bench_dashboard.py
