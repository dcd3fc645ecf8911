"""Create latency with and without the operations layer; see bench_ops.sh.

    bench_ops.py PORT KEY N OUT.json     one round: N creates (each killed), /metrics scraped
                                         every second meanwhile; appends the times to OUT
    bench_ops.py --report BASE.json NEW.json LOAD   prints the Markdown table"""

import http.client
import json
import os
import statistics
import sys
import threading
import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def round_(port, key, n, out):
    stop = threading.Event()
    scrapes = []

    def scrape():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.wait(1.0):
            c.request("GET", "/metrics")
            r = c.getresponse()
            r.read()
            scrapes.append(r.status)

    t = threading.Thread(target=scrape, daemon=True)
    t.start()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"X-API-KEY": key, "Content-Type": "application/json"}
    times = []
    for _ in range(n):
        start = time.perf_counter()
        c.request("POST", "/v2/sandboxes", body='{"templateID":"tiny","timeout":120}', headers=h)
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - start) * 1000)
        if r.status != 201:
            sys.exit(f"create: {r.status} {body[:200]!r}")
        sid = json.loads(body)["sandboxID"]
        c.request("DELETE", f"/sandboxes/{sid}", headers=h)
        r = c.getresponse()
        r.read()
    stop.set()
    t.join()
    old = json.load(open(out)) if os.path.exists(out) else {"creates": [], "scrapes": []}
    old["creates"] += times
    old["scrapes"] += scrapes
    json.dump(old, open(out, "w"))


def report(base, new, load):
    b, n = json.load(open(base)), json.load(open(new))
    print(f"create latency, {len(b['creates'])} sequential creates per build, /metrics scraped each second (load {load})\n")
    print("| | baseline | this build | |")
    print("|---|---|---|---|")
    for name, f in [("median", statistics.median), ("p90", lambda x: pct(x, 90)), ("p99", lambda x: pct(x, 99))]:
        x, y = f(b["creates"]), f(n["creates"])
        print(f"| {name} | {x:.2f} ms | {y:.2f} ms | {(y / x - 1) * 100:+.1f} % |")
    ok = sum(1 for s in n["scrapes"] if s == 200)
    print(f"\n/metrics scrapes of this build answered 200: {ok} of {len(n['scrapes'])}")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(*sys.argv[2:5])
    else:
        round_(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])
