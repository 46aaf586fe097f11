"""`make profile`: where a gateway worker's CPU goes at concurrency 32 (py-spy, collapsed stacks).

Starts the same stack as the benchmark, keeps 32 clients busy, records one gunicorn worker with
py-spy for PROFILE_SECONDS (default 10) and prints the functions that hold the most samples
(self and total). Needs py-spy (requirements-test.txt) and ptrace permission.
"""

import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, closed_loop  # noqa: E402
from run import CHAT  # noqa: E402
from stack import ROOT, Stack, cpu_seconds, tree  # noqa: E402

SECONDS = float(os.environ.get("PROFILE_SECONDS", "10"))


def summarize(collapsed: Path, top: int = 40) -> str:
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    stack = Stack()
    try:
        raw = build_request(
            "POST",
            "/v1/chat/completions",
            f"127.0.0.1:{stack.gateway_port}",
            {"Content-Type": "application/json", "Authorization": f"Bearer {stack.secret}"},
            CHAT,
        )
        out = ROOT / "bench" / "results" / "profile.txt"
        out.parent.mkdir(exist_ok=True)
        load = threading.Thread(
            target=lambda: asyncio.run(closed_loop("127.0.0.1", stack.gateway_port, raw, 32, seconds=SECONDS + 5))
        )
        load.start()
        workers = [pid for pid in tree(stack.pid) if pid != stack.pid]
        before = {pid: cpu_seconds(pid) for pid in workers}
        time.sleep(2)
        worker = max(workers, key=lambda pid: cpu_seconds(pid) - before[pid])  # a busy one
        subprocess.run(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker),
                "--duration",
                str(int(SECONDS)),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                "--rate",
                "250",
            ],
            check=True,
            capture_output=True,
        )
        load.join()
        print(summarize(out))
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
