"""What the browser tests share: Debian's Chromium driven by Playwright (never a downloaded one).

The fixtures (`chromium`, `page`) are in conftest.py; a browser test module starts with
`pytestmark = BROWSER` and takes them.
"""

import os
import shutil

import pytest
from django.core.servers.basehttp import WSGIServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = os.environ.get("GATEWAY_SCREENSHOTS", "/tmp")

BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"),
]


class SerialWSGIServer(WSGIServer):
    """One request at a time (and no keep-alive, which Django drops for unthreaded servers): the
    live server shares the test's in-memory SQLite connection with its request threads, and an
    sqlite3 connection used by two threads at once fails ("not an error")."""

    def __init__(self, *args, connections_override=None, **kwargs):
        super().__init__(*args, **kwargs)
