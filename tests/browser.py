"""What the browser tests share: Debian's Chromium driven by Playwright (never a downloaded one).

The fixtures (`chromium`, `page`) are in conftest.py; a browser test module starts with
`pytestmark = BROWSER` and takes them.
"""

import functools
import os
import shutil
import tempfile

import pytest
from django.core.servers.basehttp import WSGIServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)"),
]


@functools.cache
def screenshot_folder() -> str:
    """GATEWAY_SCREENSHOTS when set, else a folder of this process's own (made at the first
    screenshot): never fixed /tmp names that parallel runs would overwrite."""
    return os.environ.get("GATEWAY_SCREENSHOTS") or tempfile.mkdtemp(prefix="gateway-screenshots-")


def screenshot_path(name: str) -> str:
    return os.path.join(screenshot_folder(), name)


class SerialWSGIServer(WSGIServer):
    """One request at a time (and no keep-alive, which Django drops for unthreaded servers): the
    live server shares the test's in-memory SQLite connection with its request threads, and an
    sqlite3 connection used by two threads at once fails ("not an error")."""

    def __init__(self, *args, connections_override=None, **kwargs):
        super().__init__(*args, **kwargs)
