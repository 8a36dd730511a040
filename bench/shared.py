"""A budget shared through Redis: throughput against the budget's floor, and what Redis costs.

    python -m bench shared [--quick] [--processes 4] [--rpm 1200] [--calls 100]

Two measurements, against one simulator whose own bucket enforces ``--rpm``:

- **budget**: ``--processes`` processes, each sending ``--calls`` calls at once through an
  engine with ``rpm`` and ``redis_url`` (one shared budget): the combined rate against the
  limit (the floor of the run's time is (calls - one second's burst) / rate), the share of
  requests answered 429, and calls lost. Then the same processes each limiting itself alone
  (no Redis): N x the limit is attempted, so the provider answers with 429s.
- **overhead**: one process, 2,000 calls at a zero-latency simulator with no limit, with and
  without Redis (rpm set very high so the shared bucket never waits): CPU and wall time per
  call; the difference is what the Lua reservation and usage correction cost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, sim_reset, sim_stats, simulator, table, write_result

WORKER = ROOT / "tests" / "shared_worker.py"


def _redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def _run(url: str, redis_url: str, processes: int, calls: int, *extra: str) -> dict[str, Any]:
    sim_reset(url)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, redis_url, str(calls), "--tag", f"p{i}", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])
        results.append(json.loads(out.strip().splitlines()[-1]))
    stats = sim_stats(url)
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    return {"results": results, "sim": stats, "seconds": end - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench shared")
    parser.add_argument("--quick", action="store_true", help="fewer calls (40 per process)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--calls", type=int, default=None)
    args = parser.parse_args(argv)
    calls = args.calls or (40 if args.quick else 100)
    total = args.processes * calls
    burst = args.rpm / 60.0  # one second's worth, taken at once
    floor = (total - burst) / (args.rpm / 60.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis_proc, redis_url = _redis(Path(tmp))
        try:
            with simulator("--rpm", str(int(args.rpm)), "--latency", "20ms") as url:
                for label, extra in (
                    ("shared (Redis)", ["--rpm", str(args.rpm)]),
                    ("each alone", ["--rpm", str(args.rpm), "--namespace", "__none__"]),
                ):
                    redis_arg = redis_url if label.startswith("shared") else ""
                    run = _run(url, redis_arg or "none", args.processes, calls, *extra)
                    ok = sum(r["ok"] for r in run["results"])
                    sim = run["sim"]
                    rows.append(
                        {
                            "run": label,
                            "calls_ok": ok,
                            "lost": total - ok,
                            "requests": sim["requests"],
                            "x429_pct": round(
                                100 * sim["rate_limited"] / max(1, sim["requests"]), 2
                            ),
                            "seconds": round(run["seconds"], 2),
                            "floor_s": round(floor, 2),
                            "rate_vs_limit": round(floor / run["seconds"], 3),
                        }
                    )
                    print(f"  {rows[-1]}", flush=True)
            overhead = []
            with simulator("--latency", "0") as url:
                for label, redis_arg in (("no Redis", "none"), ("Redis", redis_url)):
                    run = _run(url, redis_arg, 1, 2000, "--rpm", "10000000")
                    overhead.append(
                        {"engine": label, "us_per_call": round(1e6 * run["seconds"] / 2000, 1)}
                    )
            added = overhead[1]["us_per_call"] - overhead[0]["us_per_call"]
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
    print(table(rows, list(rows[0])))
    print(table(overhead, ["engine", "us_per_call"]))
    print(f"Redis adds {added:.0f} us of wall time per call (one process, 64 in flight)")
    results = {"budget": rows, "overhead": overhead, "added_us_per_call": added}
    write_result("shared", vars(args), results)
    return results
