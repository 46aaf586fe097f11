"""gunicorn settings for the gateway; every value can be overridden by the environment.

Why gevent: an AI call holds its connection for seconds (minutes for a stream) while doing
almost nothing. A greenlet per call costs a few KB, so one process holds thousands of them; a
thread or a process per call would run out long before. See the README ("Server model").
"""

import gc
import os
import shutil
import signal
import tempfile

import environ

env = environ.Env()

# Before anything else: gevent's monkey-patching in each new worker inspects every live object,
# Django's lazy settings included, and settings touched before wsgi.py names them fail the boot.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

# /metrics sums every worker's counters from files in this directory (prometheus_client's
# multiprocess mode). One directory per instance: a fresh temporary one unless set; it is
# emptied at start so counters from a previous run do not linger.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")

bind = env.str("GATEWAY_BIND", default="127.0.0.1:8000")
worker_class = "gateway_project.worker.GatewayWorker"  # gevent's, see worker.py
# Without Redis the quota counters live in the process: one worker keeps them exact.
# With Redis every worker shares them; use about one worker per core.
workers = env.int("GATEWAY_WORKERS", default=(os.cpu_count() or 1) if env.str("REDIS_URL", default="") else 1)
worker_connections = env.int("GATEWAY_WORKER_CONNECTIONS", default=4000)
backlog = env.int("GATEWAY_BACKLOG", default=4096)
keepalive = env.int("GATEWAY_KEEPALIVE", default=75)
# For gevent workers `timeout` is how long a worker may stop answering its heartbeat, not a
# per-request limit (each route has its own timeouts).
timeout = env.int("GATEWAY_WORKER_TIMEOUT", default=60)
# On SIGTERM, in-flight calls and streams get this long to finish.
graceful_timeout = env.int("GATEWAY_GRACEFUL_TIMEOUT", default=30)
max_requests = env.int("GATEWAY_MAX_REQUESTS", default=0)
max_requests_jitter = env.int("GATEWAY_MAX_REQUESTS_JITTER", default=0)
accesslog = None  # the gateway writes its own JSON access line per call
errorlog = "-"
loglevel = env.str("GATEWAY_LOG_LEVEL", default="info")
proc_name = "ai-gateway"
# gunicorn's control socket defaults to one path per user, which several instances on one host
# would share; it is off unless GATEWAY_CONTROL_SOCKET names a path for this instance.
_control_socket = env.str("GATEWAY_CONTROL_SOCKET", default="")
if _control_socket:
    control_socket = _control_socket
control_socket_disable = not _control_socket


def post_fork(server, worker):
    """Until a new worker installs its own signal handlers, a SIGTERM would run the master's
    handler it inherited through fork and be lost: the worker would serve on until killed at the
    graceful timeout, losing its queued log rows. Note it instead, so the worker starts stopping."""
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(worker, "alive", False))


def post_worker_init(worker):
    """Build the worker's runtime, write queued log rows as soon as shutdown starts, and freeze the
    startup objects."""
    from proxy import recording, runtime

    # This process's live state (configuration copy, log writer, balancers, upstream client, ...),
    # built once here, after the fork and once the application is loaded (proxy/runtime.py).
    runtime.start()

    # Rows of finished calls are written at once, not only when the worker exits: a worker that
    # outlives the graceful timeout is killed, and its queue with it. With the database away they
    # go to the spool, at once and on every flush until the worker exits.
    worker.when_stopping.append(recording.stopping)
    recording.start()  # the writer replays rows spooled by processes that stopped before
    # Objects made while loading Django live as long as the worker: moved out of the garbage
    # collector's sight, its collections only walk what requests allocate.
    if os.environ.get("GATEWAY_GC_FREEZE", "1") == "1":
        gc.collect()
        gc.freeze()


def worker_exit(server, worker):
    """A stopping worker writes its queued log rows first, or spools them (the database is away)."""
    from proxy import recording

    written, spooled = recording.flush_or_spool()
    if written:
        server.log.info("worker %s wrote %d queued log row(s) before exiting", worker.pid, written)
    if spooled:
        server.log.warning("worker %s spooled %d log row(s) the database did not take", worker.pid, spooled)


def on_starting(server):
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.endswith(".db") and os.path.isfile(path):
            os.remove(path)


def child_exit(server, worker):
    """A dead worker's in-flight gauge must not count any more, nor its concurrency slots (a
    worker killed mid-call never released them)."""
    from prometheus_client import multiprocess

    from gateway_project.slot_holders import release_dead_worker

    multiprocess.mark_process_dead(worker.pid)
    try:
        released = release_dead_worker(worker.pid)
    except Exception as exc:  # Redis away: the slots still expire after GATEWAY_INFLIGHT_TTL
        server.log.warning("could not release the slots of worker %s: %r", worker.pid, exc)
    else:
        if released:
            server.log.info("released %d concurrency slot(s) held by worker %s", released, worker.pid)


def on_exit(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(directory).startswith("gateway-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)  # the temporary one we made
