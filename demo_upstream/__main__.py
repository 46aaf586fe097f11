"""python -m demo_upstream [--host 127.0.0.1] [--port 9000] [--workers 1]

Serves the demo component under gunicorn's gevent worker, so one process holds thousands of
slow streams (the benchmark needs that). Once it listens it prints one line on standard output,
`demo upstream listening on http://HOST:PORT`: with `--port 0` the system picks a free port, and
that line tells which (the tests and benchmarks start it so).
"""

import argparse

from gunicorn.app.base import BaseApplication


class DemoServer(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self):
        from demo_upstream.app import application

        return application


def report_address(server) -> None:
    """gunicorn's when_ready hook: the address it bound, port 0 resolved."""
    for listener in server.LISTENERS:
        host, port = listener.sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host  # IPv6
        print(f"demo upstream listening on http://{host}:{port}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="The demo OpenAI-compatible component.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    DemoServer(
        {
            "bind": f"{args.host}:{args.port}",
            "workers": args.workers,
            "worker_class": "gevent",
            "worker_connections": 4000,
            "keepalive": 75,
            "backlog": 4096,
            "accesslog": None,
            "loglevel": "warning",
            "graceful_timeout": 5,
            "when_ready": report_address,
        }
    ).run()


if __name__ == "__main__":
    main()
