#!/usr/bin/env bash
# Runs the SDK-level benchmark against a fresh `soulbox serve` (root; release build).
set -euo pipefail
cd "$(dirname "$0")"
bin=../target/x86_64-unknown-linux-gnu/release/soulbox
port="${SOULBOX_COMPAT_PORT:-3918}"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[ -x .venv-2.63.0/bin/python ] || { python3 -m venv .venv-2.63.0; .venv-2.63.0/bin/pip install -q e2b==2.63.0 pytest; }
[ -x .venv-interpreter/bin/python ] || { python3 -m venv .venv-interpreter; .venv-interpreter/bin/pip install -q e2b-code-interpreter==2.11.5 pytest; }
SOULBOX_ADMIN_API_KEY="$key" "$bin" serve --listen "127.0.0.1:$port" --templates "${SOULBOX_COMPAT_TEMPLATE:-base},code-interpreter" >bench-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break || sleep 0.5; done
export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key" E2B_MAX_CONNECTIONS=1000
unset E2B_DEBUG E2B_DOMAIN
.venv-2.63.0/bin/python bench_sdk.py
.venv-interpreter/bin/python bench_interpreter.py
.venv-2.63.0/bin/python bench_cli.py "$bin"
.venv-2.63.0/bin/python bench_templates.py
