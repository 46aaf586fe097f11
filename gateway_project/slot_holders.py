"""Which concurrency slots each gateway process holds, so that the gunicorn master frees a dead
worker's slots as soon as it sees the worker die, rather than GATEWAY_INFLIGHT_TTL later.

On Redis, taking a slot (proxy/slots.py) also notes it in the process's holder hash (slot token
-> the slot set's key) and releasing it removes the note, in the same script: no extra round
trip. The master runs `release_dead_worker(pid)` from gunicorn's child_exit hook. It has no
Django (the master never loads the application), so it reads REDIS_URL and CACHE_KEY_PREFIX
itself; the hash's name is built here for both sides. A leaf: imports nothing of ours.
"""

import os
import socket

# ARGV[1]: the holder hash. Removes each noted entry from its slot set, then the hash.
RELEASE_HOLDER = """
local held = redis.call('HGETALL', ARGV[1])
for i = 1, #held, 2 do
    redis.call('ZREM', held[i + 1], held[i])
end
redis.call('DEL', ARGV[1])
return #held / 2
"""


def holder_key(prefix: str, pid: int | None = None) -> str:
    """The holder hash of process `pid` (this one by default) on this host."""
    return f"{prefix}:slot-holder:{socket.gethostname()}:{pid or os.getpid()}"


def release_dead_worker(pid: int) -> int:
    """Free every slot the dead process `pid` still held; returns how many. Nothing without Redis
    (each process then keeps its slots in its own memory, gone with it)."""
    url = os.environ.get("REDIS_URL", "")
    if not url:
        return 0
    import redis

    timeout = float(os.environ.get("REDIS_TIMEOUT", "0.5"))
    with redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout) as client:
        return int(client.eval(RELEASE_HOLDER, 0, holder_key(os.environ.get("CACHE_KEY_PREFIX", "gw"), pid)))
