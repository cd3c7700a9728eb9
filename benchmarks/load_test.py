#!/usr/bin/env python3
"""A bounded load test of `nbrules serve`, on loopback only.

    python benchmarks/load_test.py [--clients 16] [--requests 4000] [--seconds 60]

Starts the real server in a subprocess on 127.0.0.1, sends POST /evaluate requests
from concurrent clients (persistent HTTP/1.1 connections) until the request budget or
the time budget is spent, and prints requests per second, latency percentiles, errors,
and the server's resident memory before and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(*extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `nbrules serve` on loopback; return the process and its base URL once healthy."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nbrules.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become healthy in 60 s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def patients(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Realistic mixes of complete and incomplete records."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p: dict[str, Any] = {"age_days": rng.randint(0, 3000), "primary_idrfs": rng.choice([[], ["two_compartments"]]),
                             "metastatic_sites": rng.choice([[], ["liver"], ["bone"], ["skin", "liver"]]),
                             "mycn_status": rng.choice(["amplified", "not_amplified"])}
        if p["metastatic_sites"]:
            p["mibg_bone_or_marrow_avid"] = rng.random() < 0.3
        if rng.random() < 0.7:
            p["chr11q_status"] = rng.choice(["normal", "aberrant"])
            p["chr1p_status"] = rng.choice(["normal", "aberrant"])
            p["ploidy"] = rng.choice(["diploid", "hyperdiploid"])
            p["histology_category"] = "neuroblastoma"
            p["differentiation_grade"] = rng.choice(["poorly_differentiated", "differentiating"])
            p["mki"] = rng.choice(["low", "intermediate", "high"])
            p["symptoms"] = []
        out.append(p)
    return out


def run_load(url: str, clients: int, total: int, seconds: float, pid: int | None = None) -> dict[str, Any]:
    host, port = url.split("//")[1].split(":")
    bodies = [json.dumps(p).encode() for p in patients(500)]
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        i = k
        while True:
            with lock:
                if sent[0] >= total or time.monotonic() > stop_at:
                    break
                sent[0] += 1
            body = bodies[i % len(bodies)]
            i += clients
            t = time.perf_counter()
            try:
                conn.request("POST", "/evaluate", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or b'"outputs"' not in data:
                    errors.append(f"HTTP {resp.status}")
            except Exception as exc:  # noqa: BLE001 - counted, not raised
                errors.append(repr(exc))
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            with lock:
                latencies.append(time.perf_counter() - t)
        conn.close()

    before = rss_mb(pid) if pid else None
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = rss_mb(pid) if pid else None
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "clients": clients,
            "seconds": elapsed, "rps": len(latencies) / elapsed if elapsed else 0.0, "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "rss_before_mb": before, "rss_after_mb": after}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    proc, url = start_server()
    try:
        warm = run_load(url, args.clients, min(500, args.requests), args.seconds, proc.pid)
        report = run_load(url, args.clients, args.requests, args.seconds, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"load test, {report['clients']} concurrent clients, {report['requests']} requests in "
          f"{report['seconds']:.1f} s on loopback (after {warm['requests']} warm-up requests)")
    print(f"  {report['rps']:,.0f} requests/s, latency p50 {report['p50_ms']:.1f} ms, p99 {report['p99_ms']:.1f} ms")
    print(f"  errors: {report['errors'] + warm['errors']}")
    print(f"  server memory: {warm['rss_before_mb']:.1f} MB at start, {report['rss_before_mb']:.1f} MB after warm-up, "
          f"{report['rss_after_mb']:.1f} MB at the end")
    return 1 if report["errors"] or warm["errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
