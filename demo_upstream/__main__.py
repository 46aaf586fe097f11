"""python -m demo_upstream [--host 127.0.0.1] [--port 9000] [--workers 1]

Serves the demo component under gunicorn's gevent worker, so one process holds thousands of
slow streams (the benchmark needs that).
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
        }
    ).run()


if __name__ == "__main__":
    main()
