"""`make soak`: a steady rate through the gateway for 10 minutes; memory must stay flat.

Prints the RSS of the gateway's processes (master + workers) over time, the peak, and the
growth from the end of the warm-up to the end (goal: under 10 %). Every call's log row is
counted at the end. Environment: SOAK_SECONDS (default 600), SOAK_RATE (calls/s, default 100),
SOAK_WARMUP (seconds, default 10 % of the run, at least 5), DATABASE_URL / REDIS_URL as for the bench.
"""

import asyncio
import collections
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, paced, percentile  # noqa: E402
from run import CHAT, STREAM_CHAT  # noqa: E402
from stack import ROOT, Stack, cpu_seconds, rss_bytes  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "100"))
WARMUP = float(os.environ.get("SOAK_WARMUP", max(5.0, SECONDS / 10)))
MB = 2**20


def main() -> int:
    stack = Stack()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample():
        while not stop.wait(1.0):
            samples.append((time.monotonic() - start, rss_bytes(stack.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        host = f"127.0.0.1:{stack.gateway_port}"
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.secret}"}
        plain = build_request("POST", "/v1/chat/completions", host, auth, CHAT)
        # One call in ten is a short stream, as in real AI traffic.
        stream = build_request(
            "POST", "/v1/chat/completions", host, {**auth, "X-Demo-Chunks": "5", "X-Demo-Interval": "0.02"}, STREAM_CHAT
        )
        cpu_before = cpu_seconds(stack.pid)

        async def both():
            return await asyncio.gather(
                paced("127.0.0.1", stack.gateway_port, plain, RATE * 0.9, SECONDS),
                paced("127.0.0.1", stack.gateway_port, stream, RATE * 0.1, SECONDS, connections=16),
            )

        runs = asyncio.run(both())
        cpu = cpu_seconds(stack.pid) - cpu_before
        stop.set()
        sampler.join()
        calls = sum(len(run.results) for run in runs)
        errors = sum(run.errors for run in runs)
        # A call that got an HTTP status reached the gateway and must have its row; one that
        # failed at the connection (a keep-alive socket closed as a request went out) never did.
        answered = sum(1 for run in runs for r in run.results if r.status)
        kinds = collections.Counter(
            r.error or f"HTTP {r.status}" for run in runs for r in run.results if r.error or r.status != 200
        )
        rows = stack.wait_for_log_rows(answered)
    finally:
        stop.set()
        stack.close()

    after_warmup = [rss for t, rss in samples if t >= WARMUP]
    baseline = after_warmup[0] if after_warmup else samples[0][1]
    final = samples[-1][1]
    peak = max(rss for _, rss in samples)
    growth = 100 * (final - baseline) / baseline
    latencies = [r.latency for r in runs[0].ok]
    lines = [
        f"soak: {SECONDS:.0f} s at {RATE:.0f} calls/s (10 % short streams), {stack.workers} worker(s)",
        "",
        "   time   RSS (MB)",
    ]
    step = max(1, len(samples) // 20)
    lines += [f"{t:6.0f} s  {rss / MB:8.1f}" for t, rss in samples[::step]]
    lines += [
        "",
        f"calls {calls}, errors {errors} {dict(kinds)}",
        f"calls answered by the gateway {answered}, log rows {rows} "
        f"({'one per answered call' if rows == answered else 'MISSING ' + str(answered - rows)})",
        f"non-streaming p50 {1000 * percentile(latencies, 50):.2f} ms, p99 {1000 * percentile(latencies, 99):.2f} ms",
        f"gateway CPU per call {1000 * cpu / max(1, calls):.2f} ms",
        f"peak RSS {peak / MB:.1f} MB (goal < 300 MB)",
        f"RSS after warm-up ({WARMUP:.0f} s) {baseline / MB:.1f} MB, at the end {final / MB:.1f} MB: "
        f"growth {growth:+.1f} % (goal < 10 %)",
    ]
    text = "\n".join(lines)
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / time.strftime("soak-%Y%m%d-%H%M%S.txt")).write_text(text + "\n")
    ok = errors == 0 and rows == answered and peak < 300 * MB and growth < 10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
