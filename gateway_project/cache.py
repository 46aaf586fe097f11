"""Django's RedisCache with connections reused across requests and one round trip per incr; and
Django's LocMemCache (the defaults' in-process cache), both without memcached's key checks.

Django keeps a cache object per thread, and under gevent every request runs in a greenlet of its
own, so the stock backend built a new connection pool, and thus a new Redis connection (connect,
HELLO, SELECT), for every call. Here the pool and the client live once per process and are
shared by every greenlet; redis-py's pool is safe for that, bounded by `max_connections`, and
starts afresh in a forked worker.

`incr` in the stock backend is EXISTS then INCRBY: two round trips, and a key that expires
between them comes back without a TTL. A small Lua script does both atomically in one.
`run_script` runs the gateway's other scripts (proxy/slots.py, proxy/request_windows.py) the same
way: one round trip; the in-process cache counts the request windows under one hold of its lock.
`incr_many` adds to several counters and reads other keys in one round trip (a pipeline), where
the budgets made one per counter (proxy/budgets.py); the in-process cache answers it the same way,
under one hold of its lock.

One object per cache for the whole process (`share_between_threads`, from the app's ready()):
Django keeps each cache object in an asgiref Local, one per thread, and under gevent one per
greenlet, so every call built its cache objects again and each `cache.x` looked them up in the
Local (47 us per call of 8 operations on the defaults, 27 us with them shared; about 100 us more
on Redis, where each new object also looked its pool up again). Both backends are safe to share:
the in-process cache keeps its data in module-level dicts behind a lock in any case, and the
Redis client is shared already (above). A forked child starts with objects of its own. Django's
settings overrides in tests put a per-thread Local back (django/test/signals.py): slower, the
same answers.

Both backends skip `validate_key`: Django checks every key of every operation for what memcached
would refuse (a loop over its characters: ~6 us, about half of what a locmem operation costs, and
a call makes about nine), and its documentation suggests overriding it for backends that take
any key. Redis and the in-process dictionary do, and the gateway makes its keys itself.
"""

import os
import pickle
import threading
from types import SimpleNamespace

from django.core import signals
from django.core.cache import caches, close_caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import NoScriptError

# INCRBY only when the key exists (Django's incr raises ValueError for a missing key).
INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""

_shared: dict = {}  # (server URL, options) -> (pool, client, incr script), for this process
_scripts: dict = {}  # (shared client id, Lua source) -> its registered Script, for this process
_lock = threading.Lock()


class SharedRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._found: dict = {}

    def _shared(self, write: bool):
        index = self._get_connection_pool_index(write)
        found = self._found.get(index)  # this client's lookups, so a call does not redo them
        if found is not None:
            return found
        marker = (self._servers[index], repr(sorted(self._pool_options.items())))
        with _lock:
            found = _shared.get(marker)
            if found is None:
                pool = self._pool_class.from_url(self._servers[index], **self._pool_options)
                client = self._client(connection_pool=pool)
                found = _shared[marker] = (pool, client, client.register_script(INCR_EXISTING))
        self._found[index] = found
        return found

    def _get_connection_pool(self, write):
        return self._shared(write)[0]

    def get_client(self, key=None, *, write=False):
        return self._shared(write)[1]

    def incr(self, key, delta):
        value = self._shared(True)[2](keys=[key], args=[delta])
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value

    def incr_many(self, deltas: list, read: list) -> tuple[list, dict]:
        client, script = self._shared(True)[1:]
        try:
            found = self._incr_pipeline(client, script.sha, deltas, read)
        except NoScriptError:  # Redis restarted or its scripts flushed: load it, once
            script.sha = client.script_load(INCR_EXISTING)
            found = self._incr_pipeline(client, script.sha, deltas, read)
        values = found[len(deltas)] if read else []
        return found[: len(deltas)], {
            k: self._serializer.loads(v) for k, v in zip(read, values, strict=True) if v is not None
        }

    @staticmethod
    def _incr_pipeline(client, sha: str, deltas: list, read: list) -> list:
        # EVALSHA sent as a plain command: a Script run in a pipeline makes redis-py ask SCRIPT
        # EXISTS first, a round trip of its own.
        with client.pipeline(transaction=False) as pipe:
            for key, delta in deltas:
                pipe.evalsha(sha, 1, key, delta)
            if read:
                pipe.mget(read)
            return pipe.execute()

    def run_script(self, source: str, keys: list, args: list):
        client = self._shared(True)[1]
        script = _scripts.get((id(client), source))
        if script is None:
            script = _scripts[(id(client), source)] = client.register_script(source)
        return script(keys=keys, args=args)


class AnyKey:
    def validate_key(self, key) -> None:
        """No memcached key warnings: these backends take any key (see above)."""


class GatewayLocMemCache(AnyKey, LocMemCache):
    """settings.CACHES backend without REDIS_URL: Django's in-process cache."""

    def incr_many(self, deltas: list[tuple[str, int]], read: list[str] = ()) -> tuple[list, dict]:
        """SharedRedisCache.incr_many's answers, as Django's incr does each one (a missing or
        expired counter is None and stays missing), under one hold of the lock."""
        with self._lock:
            values = [self._incr_held(self.make_key(key), delta) for key, delta in deltas]
        return values, (self.get_many(read) if read else {})

    def count_windows(self, windows: list[tuple[str, int, int]]) -> list[int]:
        """proxy/request_windows.py's count under one hold of the lock: for each (key, limit,
        expiry) in turn, Django's add of 1 or its incr, until a count goes over its limit."""
        counts = []
        with self._lock:
            for key, limit, expiry in windows:
                made = self.make_key(key)
                count = self._incr_held(made, 1)
                if count is None:
                    count = 1
                    self._set(made, pickle.dumps(count, self.pickle_protocol), expiry)
                counts.append(count)
                if count > limit:
                    break
        return counts

    def _incr_held(self, made: str, delta: int) -> int | None:
        """Django's incr of a made key, the lock held: the new value, or None for a missing or
        expired key (which is dropped)."""
        if self._has_expired(made):
            self._delete(made)
            return None
        value = pickle.loads(self._cache[made]) + delta
        self._cache[made] = pickle.dumps(value, self.pickle_protocol)
        self._cache.move_to_end(made, last=False)
        return value


class SharedRedisCache(AnyKey, RedisCache):
    """settings.CACHES backend: gateway_project.cache.SharedRedisCache."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedRedisCacheClient

    def run_script(self, source: str, keys: list[str], args: list):
        """Run a Lua script (EVALSHA) in one round trip; `keys` are cache keys, prefixed here."""
        return self._cache.run_script(source, [self.make_and_validate_key(key) for key in keys], args)

    def incr_many(self, deltas: list[tuple[str, int]], read: list[str] = ()) -> tuple[list, dict]:
        """Add each delta to its counter and read the keys `read`, in one round trip.

        Returns the counters' new values (None for a missing one, which is left missing, as
        incr's ValueError says) and the keys read that exist, as get_many does."""
        made = {key: self.make_and_validate_key(key) for key in [key for key, _ in deltas] + list(read)}
        values, found = self._cache.incr_many([(made[key], delta) for key, delta in deltas], [made[k] for k in read])
        by_made = {made[key]: key for key in read}
        return values, {by_made[key]: value for key, value in found.items()}


def share_between_threads() -> None:
    """One object per cache for the process, shared by its threads and greenlets (see above).
    Closing them after each request (Django's close_caches) is then pointless, and a no-op for
    both backends: it is disconnected."""
    caches._connections = SimpleNamespace()
    signals.request_finished.disconnect(close_caches)


def _own_objects_in_child() -> None:
    if isinstance(caches._connections, SimpleNamespace):
        caches._connections = SimpleNamespace()


os.register_at_fork(after_in_child=_own_objects_in_child)
