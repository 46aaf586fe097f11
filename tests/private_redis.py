"""A Redis of a test's (or a fault run's) own, to stop and start again: an outage is never made by
stopping the shared one. It listens on 127.0.0.1 on a free port (redis-server cannot bind port 0
and tell it) and starts again on that same port, so the gateway's cache URL stays right.

`persistent`: it keeps its data in an append-only file in `folder`, synced at every write, so a
restart comes back with what it held; otherwise it keeps nothing and comes back empty.
"""

import subprocess
import time
from pathlib import Path

import redis

from tests.servers import on_a_free_port


class PrivateRedis:
    def __init__(self, folder: Path, persistent: bool = False):
        self.folder, self.persistent = folder, persistent
        self.process = None
        self.port = on_a_free_port(self._first_start)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _first_start(self, port: int) -> None:
        self.port = port
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        """Start it (again, on its port) and return once it answers."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        command += ["--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:  # not up yet, or still loading its file
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
