"""A small asyncio HTTP/1.1 load generator (standard library only).

One event loop, keep-alive connections, no HTTP library on the hot path: on this 2-core machine
the generator shares the CPU with the gateway and the upstream, so it must cost as little as
possible per call. The direct upstream is measured with the same generator, so what it costs
weighs the same on both sides of every ratio.
"""

import asyncio
import collections
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    status: int = 0
    latency: float = 0.0  # seconds, request sent -> last byte
    ttfb: float | None = None  # seconds, request sent -> first body byte
    chunks: int = 0
    max_gap: float = 0.0  # longest wait between two body chunks
    error: str = ""
    end: float = 0.0  # perf_counter() when the answer was complete


@dataclass
class Run:
    results: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> list:
        return [r for r in self.results if r.status == 200 and not r.error]

    @property
    def errors(self) -> int:
        return len(self.results) - len(self.ok)

    started: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.ok) / self.seconds if self.seconds else 0.0

    def rate_between(self, start: float, end: float) -> float:
        """Calls completed per second between `start` and `end` seconds into the run (steady state)."""
        done = sum(1 for r in self.ok if start <= r.end - self.started < end)
        return done / (end - start)


def percentile(values: list, p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def request(self, raw: bytes) -> Result:
        """Send one prepared request and read the whole answer (Content-Length or chunked)."""
        if self.writer is None:
            await self.open()
        result = Result()
        start = time.perf_counter()
        self.writer.write(raw)
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before the answer")
        result.status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        last = None
        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                await reader.readexactly(size + 2)
                now = time.perf_counter()
                if last is None:
                    result.ttfb = now - start
                else:
                    result.max_gap = max(result.max_gap, now - last)
                last = now
                result.chunks += 1
        elif length:
            await reader.readexactly(length)
            result.ttfb = time.perf_counter() - start
            result.chunks = 1
        elif length is None:
            await reader.read()  # until the server closes
            close = True
        result.end = time.perf_counter()
        result.latency = result.end - start
        if close:
            self.close()
        return result


def build_request(method: str, path: str, host: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(host, port, raw, run: Run, deadline: float, remaining: list, ramp: float):
    if ramp:
        await asyncio.sleep(ramp)
    connection = Connection(host, port)
    try:
        while time.perf_counter() < deadline and (remaining[0] is None or remaining[0] > 0):
            if remaining[0] is not None:
                remaining[0] -= 1
            try:
                run.results.append(await connection.request(raw))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                run.results.append(Result(error=type(exc).__name__))
                connection.close()
    finally:
        connection.close()


async def closed_loop(
    host: str,
    port: int,
    raw: bytes,
    concurrency: int,
    seconds: float = 60.0,
    total: int | None = None,
    ramp_seconds: float = 0.0,
) -> Run:
    """`concurrency` clients, each sending the next call when the last one ended."""
    run = Run()
    start = run.started = time.perf_counter()
    deadline = start + seconds + ramp_seconds
    remaining = [total]
    await asyncio.gather(
        *(
            _worker(host, port, raw, run, deadline, remaining, ramp_seconds * i / concurrency)
            for i in range(concurrency)
        )
    )
    run.seconds = time.perf_counter() - start
    return run


async def each_once(host: str, port: int, raw: bytes, concurrency: int, ramp_seconds: float = 0.0) -> Run:
    """`concurrency` calls at once, each on its own connection (slow upstream scenarios)."""
    run = Run()

    async def one(delay):
        await asyncio.sleep(delay)
        connection = Connection(host, port)
        try:
            run.results.append(await connection.request(raw))
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            run.results.append(Result(error=type(exc).__name__))
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(ramp_seconds * i / concurrency) for i in range(concurrency)))
    run.seconds = time.perf_counter() - start
    return run


async def paced(host: str, port: int, raw: bytes, rate: float, seconds: float, connections: int = 64) -> Run:
    """An open loop at `rate` calls per second over a pool of keep-alive connections (soak)."""
    run = Run()
    # Used in turn (first in, first out), so none sits idle long enough for the server's
    # keep-alive timeout to close it under the generator.
    idle = collections.deque(Connection(host, port) for _ in range(connections))
    tasks = set()

    async def one():
        connection = idle.popleft() if idle else Connection(host, port)
        try:
            run.results.append(await connection.request(raw))
            idle.append(connection)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            run.results.append(Result(error=type(exc).__name__))
            connection.close()

    start = time.perf_counter()
    sent = 0
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            break
        due = int((now - start) * rate) + 1
        while sent < due:
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(min(0.01, 1 / rate))
    if tasks:
        await asyncio.gather(*tasks)
    run.seconds = time.perf_counter() - start
    for connection in idle:
        connection.close()
    return run
