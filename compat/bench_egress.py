"""Egress benchmark: what the egress proxy costs a sandbox, against plain NAT, measured inside
sandboxes of one `soulbox serve` against one soulbox-testnet; run by compat/bench_egress.sh,
which starts both (no bandwidth limit, the testnet's CA trusted by the proxy).

    bench_egress.py SIZE CONNECTS TESTNET_DIR

Three sandboxes:
    nat     no network configuration: out by plain NAT (the baseline)
    splice  allowOut allowed.test, denyOut 0.0.0.0/0: HTTP and HTTPS go through the proxy,
            which reads the Host / SNI and then relays bytes (the sandbox verifies the
            testnet's own certificate, end to end)
    rule    as splice, plus api.test with a header rule that adds a secret: the proxy
            terminates TLS with the sandbox's CA (in its system trust store) and re-encrypts

Throughput: curl of /bytes?n=SIZE, 3 runs each, interleaved, median.
Connect latency: one python3 loop in the sandbox, CONNECTS sequential new connections
(after 20 not counted): TCP connect (+ TLS handshake) + `GET /` until the first byte of the
answer; median and p90. Addresses are given (no DNS), so no lookup is counted on either side.
"""

import json
import math
import os
import signal
import statistics
import sys
import time

import httpx
from e2b import Sandbox

TEMPLATE = "base"
URL = os.environ["E2B_API_URL"]
HEADERS = {"X-API-KEY": os.environ["E2B_API_KEY"]}
SECRET = "BENCH_EGRESS_TOKEN"
SECRET_VALUE = "bench-" + os.urandom(8).hex()
DNS = "198.51.100.53"
IP = {"allowed.test": "198.51.100.10", "api.test": "198.51.100.20"}
CA = "/tmp/testnet-ca.pem"  # the testnet's CA, copied into each sandbox
RUNS = 3
WARMUP = 10  # connections not counted, at the start of each round
ROUNDS = 5
AIM_RATIO = 80  # % of NAT throughput, at least
AIM_ADDED_MS = 1.0  # added connect latency, at most

# Runs inside the sandbox: python3 lat.py HOST IP PORT N CAFILE|- → JSON list of ms.
LAT_PY = r"""
import json, socket, ssl, sys, time
host, ip, port, n, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
warm = int(sys.argv[6])
ctx = None
if port == 443:
    ctx = ssl.create_default_context(cafile=None if ca == "-" else ca)
req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()
out = []
for i in range(warm + n):
    t = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname=host)
    s.sendall(req)
    first = s.recv(1)
    dt = time.perf_counter() - t
    if first != b"H":
        sys.exit("connection %d: no answer (%r)" % (i, first))
    rest = b""
    while True:  # the whole (small) answer, until the server closes
        b = s.recv(65536)
        if not b:
            break
        rest += b
    if b" 200 " not in first + rest[:20]:
        sys.exit("connection %d: %r" % (i, (first + rest)[:200]))
    s.close()
    if i >= warm:
        out.append(dt * 1000)
print(json.dumps(out))
"""


def create(network):
    body = {"templateID": TEMPLATE, "timeout": 900}
    if network is not None:
        body["network"] = network
    r = httpx.post(f"{URL}/v2/sandboxes", headers=HEADERS, json=body, timeout=120)
    if r.status_code >= 300:
        sys.exit(f"create {network}: {r.status_code} {r.text}")
    return Sandbox.connect(r.json()["sandboxID"])


def run(sbx, cmd, timeout=600):
    r = sbx.commands.run(cmd, timeout=timeout)
    return r.stdout


def curl(sbx, scheme, host, size, cacert):
    port = 443 if scheme == "https" else 80
    ca = f" --cacert {CA}" if cacert else ""
    out = run(sbx, f"curl -sS --fail --max-time 300 -o /dev/null{ca} "
                   f"--resolve {host}:{port}:{IP[host]} "
                   f"-w '%{{http_code}} %{{size_download}} %{{speed_download}}' "
                   f"'{scheme}://{host}/bytes?n={size}'")
    code, got, speed = out.split()
    if code != "200" or int(got) != size:
        sys.exit(f"{scheme}://{host}: HTTP {code}, {got} of {size} bytes")
    return float(speed) / 1e6  # MB/s


def latency(sbx, scheme, host, n, cacert):
    port = 443 if scheme == "https" else 80
    out = run(sbx, f"python3 /tmp/lat.py {host} {IP[host]} {port} {n} "
                   f"{CA if cacert else '-'} {WARMUP}")
    ms = json.loads(out)
    assert len(ms) == n
    return ms


def iec(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


def quantiles(ms):
    """Median and p90 (nearest rank)."""
    ms = sorted(ms)
    return statistics.median(ms), ms[math.ceil(0.9 * len(ms)) - 1]


def main():
    # A TERM from bench_egress.sh (interrupted) still kills the sandboxes and the secret.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    size, connects, tn = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ca_pem = open(os.path.join(tn, "ca.pem")).read()
    httpx.delete(f"{URL}/secrets/{SECRET}", headers=HEADERS, timeout=30)
    r = httpx.post(f"{URL}/secrets", headers=HEADERS, timeout=30,
                   json={"name": SECRET, "value": SECRET_VALUE})
    if r.status_code >= 300:
        sys.exit(f"POST /secrets: {r.status_code} {r.text}")
    policy = {"allowOut": ["allowed.test"], "denyOut": ["0.0.0.0/0"], "dnsServers": [DNS]}
    with_rule = {
        "allowOut": ["allowed.test", "api.test"], "denyOut": ["0.0.0.0/0"], "dnsServers": [DNS],
        "rules": {"api.test": [{"transform": {
            "headers": {"Authorization": "Bearer ${e2b.secrets.%s}" % SECRET}}}]},
    }
    boxes = {}
    try:
        t = time.perf_counter()
        boxes["nat"] = create(None)
        boxes["splice"] = create(policy)
        boxes["rule"] = create(with_rule)
        for s in boxes.values():
            s.files.write(CA, ca_pem)
            s.files.write("/tmp/lat.py", LAT_PY)
        print(f"(3 sandboxes ready in {time.perf_counter() - t:.1f} s)", file=sys.stderr)

        # Checks that each path is what it claims to be, before measuring it.
        # nat: no policy, so the proxy is not in the way (other.test is not allowed elsewhere).
        run(boxes["nat"], f"curl -sS --fail -m 10 --cacert {CA} "
                          f"--resolve other.test:443:198.51.100.11 https://other.test/")
        # splice: the testnet's own certificate reaches the sandbox; other names are refused.
        run(boxes["splice"], f"curl -sS --fail -m 10 --cacert {CA} https://allowed.test/")
        refused = boxes["splice"].commands.run(
            "curl -s -m 10 -o /dev/null -w '%{http_code}' http://other.test/ || true").stdout
        if refused.strip() == "200":
            sys.exit("splice sandbox reached other.test: no policy in force")
        # rule: the sandbox's own CA, not the testnet's (so the proxy terminates TLS).
        mitm = boxes["rule"].commands.run(
            f"curl -s -m 10 -o /dev/null --cacert {CA} https://api.test/; echo $?").stdout
        if mitm.strip() == "0":
            sys.exit("rule sandbox: api.test answered with the testnet's certificate, not MITM")

        # (label, sandbox, scheme, host, --cacert testnet CA)
        tput = [
            ("HTTP", [("nat", "http", "allowed.test", False),
                      ("splice", "http", "allowed.test", False)]),
            ("HTTPS", [("nat", "https", "allowed.test", True),
                       ("splice", "https", "allowed.test", True),
                       ("rule", "https", "api.test", False)]),
        ]
        speeds = {}
        for _ in range(RUNS):  # interleaved, so that drift hits every path alike
            for _, paths in tput:
                for p in paths:
                    speeds.setdefault(p, []).append(curl(boxes[p[0]], p[1], p[2], size, p[3]))
        samples = {}
        per_round = -(-connects // ROUNDS)
        for _ in range(ROUNDS):  # interleaved too
            for _, paths in tput:
                for p in paths:
                    samples.setdefault(p, []).extend(latency(boxes[p[0]], p[1], p[2], per_round, p[3]))
        lat = {p: quantiles(v) for p, v in samples.items()}
        seen = open(os.path.join(tn, "requests.jsonl")).read()
        if f"Bearer {SECRET_VALUE}" not in seen:
            sys.exit("the rule's header never reached api.test")
    finally:
        for s in boxes.values():
            try:
                s.kill()
            except Exception as e:  # noqa: BLE001 (the server's --on-stop kill gets the rest)
                print(f"kill {s.sandbox_id}: {e}", file=sys.stderr)
        httpx.delete(f"{URL}/secrets/{SECRET}", headers=HEADERS, timeout=30)

    names = {
        "splice": "allowOut: relayed after the Host / SNI",
        "rule": "header rule on api.test: TLS terminated (sandbox's CA), re-encrypted",
    }
    med = {p: statistics.median(v) for p, v in speeds.items()}
    print(f"| throughput, {iec(size)} download, median of {RUNS} "
          f"| NAT (baseline) | egress proxy | proxy / NAT | aim |")
    print("|---|---|---|---|---|")
    for proto, paths in tput:
        base = med[paths[0]]
        for p in paths[1:]:
            ratio = 100 * med[p] / base
            ok = "✓" if ratio >= AIM_RATIO else "✗"
            print(f"| {proto}, {names[p[0]]} | {base:.0f} MB/s | {med[p]:.0f} MB/s | "
                  f"{ratio:.0f} % | ≥ {AIM_RATIO} % {ok} |")
    print()
    n = len(next(iter(samples.values())))
    print(f"| new connection → first byte of `GET /`, {n} of them, median / p90 "
          f"| NAT (baseline) | egress proxy | added (proxy − NAT) | aim |")
    print("|---|---|---|---|---|")
    for proto, paths in tput:
        bm, bp = lat[paths[0]]
        for p in paths[1:]:
            m, p90 = lat[p]
            ok = "✓" if m - bm <= AIM_ADDED_MS else "✗"
            print(f"| {proto}, {names[p[0]]} | {bm:.2f} / {bp:.2f} ms | {m:.2f} / {p90:.2f} ms | "
                  f"{m - bm:+.2f} / {p90 - bp:+.2f} ms | ≤ {AIM_ADDED_MS:g} ms added (median) {ok} |")
    print()
    print(f"MB = 10⁶ bytes (curl's `speed_download`); the {RUNS} downloads of each path are "
          f"interleaved with the others'. A connection is timed in python3 in the sandbox from "
          f"connect() through the TLS handshake (HTTPS) to the first byte of the answer, to a "
          f"given address (no DNS lookup), in {ROUNDS} interleaved rounds after {WARMUP} untimed "
          f"ones each. HTTPS baseline and relay: the sandbox verifies the testnet's certificate; "
          f"rule: the one the proxy makes.")
    print("Throughput runs (MB/s, in order):", file=sys.stderr)
    for p, v in speeds.items():
        print(f"  {p[0]:6} {p[1]:5} {p[2]:12} " + " ".join(f"{x:.0f}" for x in v), file=sys.stderr)


if __name__ == "__main__":
    main()
