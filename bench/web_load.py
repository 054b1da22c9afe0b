"""Load test of `vaekit serve`: requests/s and p50/p99 latency of POST /api/decode on loopback.

    python bench/web_load.py RUN_OR_CHECKPOINT [--requests 2000] [--concurrency 8] [--repeats 3]

Starts the real server in a subprocess on 127.0.0.1, sends a bounded number of requests from
`concurrency` threads (keep-alive connections, random z ~ N(0, I)), and writes bench/RESULTS-web.md.
It stops by itself: the request count and a 120 s budget per repeat bound it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


@contextmanager
def served(run: list[str]) -> Iterator[tuple[int, subprocess.Popen]]:
    """`vaekit serve RUN` on a free loopback port, started and waited for; stopped on the way out."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", *run, "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def one_round(port: int, model: str, dim: int, n: int, concurrency: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    bodies = [json.dumps({"model": model, "z": rng.standard_normal(dim).round(4).tolist()}) for _ in range(n)]
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    next_index = iter(range(n))
    deadline = time.time() + 120

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            start = time.perf_counter()
            conn.request("POST", "/api/decode", body=bodies[i], headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors.append(response.status)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a vaekit compare run folder or checkpoints for `vaekit serve`", nargs="+")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "RESULTS-web.md"))
    args = parser.parse_args()

    with served(args.run) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/api/models")
        models = json.loads(conn.getresponse().read())
        model = next((m for m in models if m["kind"] == "vae"), models[0])
        one_round(port, model["name"], model["latent_dim"], 200, args.concurrency, seed=99)  # warm-up
        rounds = [one_round(port, model["name"], model["latent_dim"], args.requests, args.concurrency, seed=r)
                  for r in range(args.repeats)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    lines = [
        "# `vaekit serve`: POST /api/decode under load (loopback)",
        "",
        f"Command: `python bench/web_load.py {' '.join(args.run)} --requests {args.requests} "
        f"--concurrency {args.concurrency} --repeats {args.repeats}`",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores; "
        f"Python {platform.python_version()}; torch {__import__('torch').__version__}; "
        f"date {time.strftime('%Y-%m-%d')}.",
        f"Model: {model['name']} ({model['arch']}, latent {model['latent_dim']}, images "
        f"{'x'.join(map(str, model['image_shape']))}); server and client share the machine.",
        "",
        "| repeat | requests | errors | requests/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {i + 1} | {r['requests']} | {r['errors']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
          for i, r in enumerate(rounds)],
        f"| **median** | | | **{med('rps'):.0f}** | **{med('p50_ms'):.1f}** | **{med('p99_ms'):.1f}** |",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
