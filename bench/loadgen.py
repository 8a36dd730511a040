"""Is ``asynctg bench`` ever the bottleneck? Its request rate against a bare aiohttp loop on the
same zero-latency simulator, in the same run, and its own CPU per request.

    python -m bench loadgen [--requests 5000] [--concurrency 256] [--rounds 3]

The simulator runs in its own process (``--latency 0``); each client is a fresh process making
``--requests`` requests with ``--concurrency`` in flight: the bare loop (aiohttp tasks posting
the same body and reading the answer, streamed events included, nothing else) and
``asynctg bench --workload calls`` (the engine's scheduler, retries, usage and per-request
timing). Both streamed (the default of ``asynctg bench``) and plain; the median of the rounds.
The ratio is what the target reads (at least 0.8); the simulator's and each client's CPU say
which side limited the rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from bench.common import ROOT, run_child, sim_reset, sim_stats, simulator, table, write_result

BARE = r"""
import asyncio, json, sys, time
import aiohttp
URL, N, C, STREAM = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
async def main():
    body = {"model": "sim-1", "max_tokens": 16, "temperature": 0}
    if STREAM:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    counter = iter(range(N))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker():
            for i in counter:
                payload = dict(body, messages=[{"role": "user", "content": f"Request {i}: hi"}])
                async with session.post(URL + "/chat/completions", json=payload) as resp:
                    if STREAM:  # blocks as they arrive, until the end marker
                        tail = b""
                        async for block in resp.content.iter_any():
                            tail = (tail + block)[-32:]
                            if b"data: [DONE]" in tail:
                                break
                    else:
                        await resp.read()
                    assert resp.status == 200, resp.status
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(C)))
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        return {"requests_per_s": N / wall, "cpu_us_per_request": 1e6 * cpu / N}
print(json.dumps(asyncio.run(main())))
"""


def _asynctg(url: str, requests: int, concurrency: int, stream: bool) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "asynctg", "bench", "--base-url", url, "--model", "sim-1",
        "--api-key-env", "ASYNCTG_BENCH_NO_KEY", "--concurrency", str(concurrency),
        "--requests", str(requests), "--prompt-tokens", "8", "--reply-tokens", "16",
        "--json", "--quiet",
    ]  # fmt: skip
    if not stream:
        cmd.append("--no-stream")
    child = run_child(cmd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    row = json.loads(child.stdout)["levels"][0]
    server = sim_stats(url)
    return {
        # what asynctg bench reports against what the simulator counted
        "agrees": row["http_requests"] == server["requests"]
        and row["completion_tokens"] == server["completion_tokens"]
        and row["prompt_tokens"] == server["prompt_tokens"],
        "requests_per_s": row["requests_per_s"],
        "cpu_us_per_request": 1e3 * row["client_cpu_per_request_ms"],
        "client_limited": row["client_limited"],
        "failed": row["failed"],
    }


def _bare(url: str, requests: int, concurrency: int, stream: bool) -> dict[str, Any]:
    child = run_child(
        [sys.executable, "-c", BARE, url, str(requests), str(concurrency), "1" if stream else "0"],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    return dict(json.loads(child.stdout))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench loadgen")
    parser.add_argument("--quick", action="store_true", help="2,000 requests x 3 rounds")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    requests = args.requests or (2000 if args.quick else 5000)
    rows = []
    with simulator("--latency", "0") as url:
        for stream in (True, False):
            runs: dict[str, list[dict[str, Any]]] = {"bare aiohttp": [], "asynctg bench": []}
            for _ in range(args.rounds):
                sim_reset(url)
                runs["bare aiohttp"].append(_bare(url, requests, args.concurrency, stream))
                sim_reset(url)
                runs["asynctg bench"].append(_asynctg(url, requests, args.concurrency, stream))
            agrees = all(r["agrees"] for r in runs["asynctg bench"])
            medians = {
                name: {
                    "requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
                    "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in rs),
                }
                for name, rs in runs.items()
            }
            bare_rate = medians["bare aiohttp"]["requests_per_s"]
            for name, m in medians.items():
                rows.append(
                    {
                        "mode": "streamed" if stream else "plain",
                        "client": name,
                        "requests_per_s": round(m["requests_per_s"], 1),
                        "cpu_us_per_request": round(m["cpu_us_per_request"], 1),
                        "vs_bare": round(m["requests_per_s"] / bare_rate, 3),
                        "counts_match_server": agrees if name == "asynctg bench" else None,
                    }
                )
    columns = ["mode", "client", "requests_per_s", "cpu_us_per_request", "vs_bare"]
    print(table(rows, [*columns, "counts_match_server"]))
    results = {"rows": rows, "requests": requests, "concurrency": args.concurrency}
    write_result("loadgen", vars(args), results)
    return results
