#!/usr/bin/env bash
# Compatibility scenarios: the official E2B SDKs, pinned and unmodified, against a real
# `soulbox serve` on one URL (E2B_API_URL = E2B_SANDBOX_URL). Needs a release build and root.
set -euo pipefail
cd "$(dirname "$0")"
bin=../target/x86_64-unknown-linux-gnu/release/soulbox
data="${SOULBOX_TEST_DATA_DIR:-/var/lib/soulbox-test}"
port="${SOULBOX_COMPAT_PORT:-3917}"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"

./venvs.sh
./dashboard/venv.sh
(cd js && npm ci --no-audit --no-fund --loglevel=error)

# start_server [keep|kill]: what a stop does to the sandboxes (keep: the next start takes
# them over).
start_server() {
  SOULBOX_EGRESS_TRUST="$testnet/ca.pem" SOULBOX_ADMIN_API_KEY="$key" SOULBOX_DATA_DIR="$data" "$bin" serve --listen "127.0.0.1:$port" --templates base,code-interpreter \
    --insecure-registry "$registry" --on-stop "${1:-keep}" >>serve.log 2>&1 &
  server=$!
  python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit("soulbox serve did not come up; see compat/serve.log")
PY
}
: >serve.log
# The internet for the egress scenarios: a network namespace with its own DNS, HTTP and HTTPS
# servers and CA (soulbox-testnet); it lives as long as this script.
testnet=$(mktemp -d)
"${bin%/soulbox}/soulbox-testnet" up --dir "$testnet" --parent-pid $$ >testnet.log 2>&1 &
testnet_pid=$!
for _ in $(seq 100); do [ -e "$testnet/ready" ] && break; sleep 0.1; done
[ -e "$testnet/ready" ] || { echo "soulbox-testnet did not come up; see compat/testnet.log"; exit 1; }
# An OCI registry on loopback with a busybox image, for `from_image` (never an outside one).
registry="127.0.0.1:${SOULBOX_COMPAT_REGISTRY_PORT:-5917}"
registry_dir=$(mktemp -d)
./templates/registry.sh "${registry##*:}" "$registry_dir/r"
# A second team's key: what one team builds, the other must not see.
other_key=$(SOULBOX_DATA_DIR="$data" "$bin" keys create --name compat-other --team compat-other)
# Keys and quotas for the access scenarios (compat/access).
sbx() { SOULBOX_DATA_DIR="$data" "$bin" "$@"; }
quota_key=$(sbx keys create --name compat-quota --team compat-quota --role member)
sbx teams quota compat-quota --sandboxes 1 >/dev/null
rate_key=$(sbx keys create --name compat-rate --team compat-rate --role member)
sbx teams quota compat-rate --rate 2 --burst 2 >/dev/null
reader_key=$(sbx keys create --name compat-reader --role read-only)
start_server
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; kill $testnet_pid 2>/dev/null; wait $testnet_pid 2>/dev/null; rm -rf "$testnet"; kill "$(cat "$registry_dir/r/registry.pid")" 2>/dev/null || true; rm -rf "$registry_dir" ${upgraded:+"$upgraded"}' EXIT

export SOULBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key" SOULBOX_COMPAT_TEMPLATE=base
# Every SDK call goes to this SoulBox only (never to E2B's public API).
export E2B_API_URL="$SOULBOX_URL" E2B_SANDBOX_URL="$SOULBOX_URL"
unset E2B_DEBUG E2B_DOMAIN
for v in 2.63.0 2.50.0; do
  echo "== Python e2b $v"
  (cd python && "../.venv-$v/bin/python" -m pytest -q -p no:cacheprovider)
done
# 2.45.1 reads a cut stream differently (no health probe): the kill-mid-command scenario.
echo "== Python e2b 2.45.1 (a sandbox killed mid-command)"
(cd python && ../.venv-2.45.1/bin/python -m pytest -q -p no:cacheprovider test_commands.py -k killed_mid)
echo "== Python e2b 2.63.0: custom templates"
(cd templates && SOULBOX_OTHER_TEAM_KEY="$other_key" SOULBOX_COMPAT_REGISTRY="$registry" ../.venv-2.63.0/bin/python -m pytest -q -p no:cacheprovider)
echo "== Python e2b 2.63.0: egress policy, secrets, private ports"
(cd egress && SOULBOX_TESTNET_DIR="$testnet" SOULBOX_OTHER_TEAM_KEY="$other_key" ../.venv-2.63.0/bin/python -m pytest -q -p no:cacheprovider)
echo "== Python e2b 2.63.0: roles, quotas, rate limits"
(cd access && SOULBOX_QUOTA_KEY="$quota_key" SOULBOX_RATE_KEY="$rate_key" SOULBOX_READER_KEY="$reader_key" ../.venv-2.63.0/bin/python -m pytest -q -p no:cacheprovider)
echo "== Python e2b 2.63.0: monitoring (/metrics, get_metrics)"
(cd monitoring && ../.venv-2.63.0/bin/python -m pytest -q -p no:cacheprovider)
echo "== The dashboard in Chromium (Playwright), sandboxes made by Python e2b 2.63.0"
(cd dashboard && SOULBOX_READER_KEY="$reader_key" SOULBOX_OTHER_TEAM_KEY="$other_key" ../.venv-dashboard/bin/python -m pytest -q -p no:cacheprovider)
echo "== Python e2b-code-interpreter 2.11.5"
(cd interpreter && ../.venv-interpreter/bin/python -m pytest -q -p no:cacheprovider)
echo "== JS e2b 2.51.0 and @e2b/code-interpreter 2.8.0"
(cd js && node --test)

# Restarts (issue 12): a graceful stop, a crash, and an upgrade (the binary replaced). Every
# sandbox survives each one and the new server takes it over; one that dies while the server
# is down is reported gone, with nothing of it left on the host.
py=".venv-2.63.0/bin/python"
state_file=$(mktemp)
for how in TERM KILL UPGRADE; do
  echo "== restart after SIG$how"
  "$py" restart_check.py before "$state_file"
  kill -"${how/UPGRADE/TERM}" "$server"
  wait "$server" 2>/dev/null || true
  "$py" restart_check.py while-down "$state_file"
  if [ "$how" = UPGRADE ]; then
    upgraded=$(mktemp -d)
    cp "$bin" "$(dirname "$bin")/soulbox-agent" "$upgraded/"
    bin="$upgraded/soulbox"
  fi
  start_server
  "$py" restart_check.py after "$state_file"
done
rm -f "$state_file"
# From here on a stop removes every sandbox: nothing of the scenarios outlives them.
kill "$server"; wait "$server" 2>/dev/null || true
start_server kill

# Every scenario cleaned up after itself: nothing is left running.
left=$(curl -s -H "X-API-KEY: $key" "$SOULBOX_URL/v2/sandboxes" || echo "?")
if [ "$left" != "[]" ]; then
  echo "sandboxes left after the compatibility scenarios: $left"
  exit 1
fi
echo "compatibility scenarios passed; no sandbox left"
