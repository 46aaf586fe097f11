"""One cache object per process (gateway_project/cache.py share_between_threads): the greenlets
of a gevent worker and the threads of a process use the same one, and a forked child (a gunicorn
worker) makes its own, which sees what was there at the fork. Without it, every call built its
cache objects again."""

import os
import subprocess
import sys

from tests.servers import ROOT

SCRIPT = """
import os, threading
import django, gevent
django.setup()
from django.core.cache import caches
main = caches["default"]
greenlets = [gevent.spawn(lambda: caches["default"]).get() for _ in range(3)]
threads = []
thread = threading.Thread(target=lambda: threads.append(caches["default"]))
thread.start()
thread.join()
print("shared" if all(found is main for found in greenlets + threads) else "not shared")
main.set("shared-before-fork", 1)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    child = caches["default"]
    mine = child is not main and child is caches["default"] and child.get("shared-before-fork") == 1
    os.write(write, b"1" if mine else b"0")
    os._exit(0)
os.waitpid(pid, 0)
print("child has its own" if os.read(read, 1) == b"1" else "child uses its parent's")
main.delete("shared-before-fork")
"""


def test_greenlets_and_threads_share_one_cache_object_and_a_forked_child_makes_its_own(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",  # production's settings, on this run's Redis if set
        SECRET_KEY="cache-objects",
        GATEWAY_DOT_ENV="",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["shared", "child has its own"], done.stdout + done.stderr
