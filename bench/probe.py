"""A health probe as a load balancer runs it: GET a URL on a fresh connection every INTERVAL.

python bench/probe.py URL SECONDS INTERVAL  ->  prints one JSON list of [seconds since start, latency in ms or None when it failed]
Runs as a process of its own so the load generator's busy event loop does not delay it.
"""

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> None:
    url, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    latencies = []
    begin = time.monotonic()
    end = begin + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            connection.request("GET", parts.path)
            response = connection.getresponse()
            response.read()
            connection.close()
            latency = (time.perf_counter() - start) * 1000 if response.status == 200 else None
        except OSError:
            latency = None
        latencies.append([round(time.monotonic() - begin, 2), latency])
        time.sleep(interval)
    print(json.dumps(latencies))


if __name__ == "__main__":
    main()
