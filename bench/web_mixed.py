"""Mixed load on `vaekit serve`: many concurrent big samples, and a stream of small GETs beside them.

    python bench/web_mixed.py RUN_OR_CHECKPOINT [--big 50] [--seconds 20] [--out bench/RESULTS-web-mixed.md]

Starts the real server on 127.0.0.1 in a subprocess (the `vaekit` on PYTHONPATH, so an older checkout can be
measured the same way), then for `--seconds`: `--big` threads each send POST /api/sample with n = 64 in a loop,
and one thread sends GET /api/models every 50 ms. A big client told 503 waits the 1 s that Retry-After says
(`--impolite`: it retries at once). Reports the small GETs' p50/p99/max latency, the big
requests' statuses (200, or 503 when the server sheds load), and the server's resident memory before, at the
peak during, and after. Bounded: every loop stops at the deadline, every request has a 30 s timeout.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from web_load import served

HERE = Path(__file__).resolve().parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request(port: int, method: str, path: str, body: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0  # refused, reset or timed out
    finally:
        conn.close()


def run(port: int, pid: int, big: int, seconds: float, polite: bool) -> dict:
    deadline = time.time() + seconds
    statuses: collections.Counter = collections.Counter()
    small: list[float] = []
    peak = [rss_mb(pid)]
    lock = threading.Lock()

    def big_loop() -> None:
        while time.time() < deadline:
            status = request(port, "POST", "/api/sample", json.dumps({"n": 64}))
            with lock:
                statuses[status] += 1
            if status == 503 and polite:  # a well-behaved client waits as Retry-After says (1 s)
                time.sleep(1)

    def small_loop() -> None:
        while time.time() < deadline:
            started = time.perf_counter()
            status = request(port, "GET", "/api/models")
            with lock:
                small.append(time.perf_counter() - started if status == 200 else float("inf"))
                peak.append(rss_mb(pid))
            time.sleep(0.05)

    threads = [threading.Thread(target=big_loop) for _ in range(big)] + [threading.Thread(target=small_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(small) * 1000
    return {"small_requests": len(small), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "big": dict(statuses),
            "peak_mb": max(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="+", help="a vaekit compare run folder or checkpoints for `vaekit serve`")
    parser.add_argument("--big", type=int, default=50, help="concurrent clients sending big samples")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--label", default="this checkout", help="what is measured, for the table")
    parser.add_argument("--impolite", action="store_true", help="big clients retry at once after a 503, ignoring "
                        "Retry-After (a flood rather than a crowd)")
    parser.add_argument("--out", default=str(HERE / "RESULTS-web-mixed.md"), help="appends a row here")
    args = parser.parse_args()

    with served(args.run) as (port, proc):
        time.sleep(1)
        before = rss_mb(proc.pid)
        result = run(port, proc.pid, args.big, args.seconds, polite=not args.impolite)
        time.sleep(2)
        after = rss_mb(proc.pid)
    label = args.label + (", clients ignore Retry-After" if args.impolite else "")
    row = (f"| {label} | {result['small_requests']} | {result['p50_ms']:.0f} | {result['p99_ms']:.0f} | "
           f"{result['max_ms']:.0f} | {', '.join(f'{k}: {v}' for k, v in sorted(result['big'].items()))} | "
           f"{before:.0f} / {result['peak_mb']:.0f} / {after:.0f} |")
    out = Path(args.out)
    if not out.is_file():
        out.write_text("# `vaekit serve`: small GETs beside many big samples (loopback, 2 cores)\n\n"
                       f"Command: `python bench/web_mixed.py RUN --big {args.big} --seconds {args.seconds:g} "
                       "--label LABEL` (status 0: refused, reset or timed out)\n\n"
                       "| server | GET /api/models sent | p50 ms | p99 ms | max ms | POST /api/sample n=64 statuses "
                       "| server RSS MB before / peak / after |\n| --- | --- | --- | --- | --- | --- | --- |\n")
    with open(out, "a") as f:
        f.write(row + "\n")
    print(row)
    print(f"(server pid {proc.pid}; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
