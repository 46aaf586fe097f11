"""Django's RedisCache with connections reused across requests and one round trip per incr.

Django keeps a cache object per thread, and under gevent every request runs in a greenlet of its
own, so the stock backend built a new connection pool, and thus a new Redis connection (connect,
HELLO, SELECT), for every call. Here the pool and the client live once per process and are
shared by every greenlet; redis-py's pool is safe for that, bounded by `max_connections`, and
starts afresh in a forked worker.

`incr` in the stock backend is EXISTS then INCRBY: two round trips, and a key that expires
between them comes back without a TTL. A small Lua script does both atomically in one.
`run_script` runs the gateway's other scripts (proxy/slots.py) the same way: one round trip.
"""

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

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

    def run_script(self, source: str, keys: list, args: list):
        client = self._shared(True)[1]
        script = _scripts.get((id(client), source))
        if script is None:
            script = _scripts[(id(client), source)] = client.register_script(source)
        return script(keys=keys, args=args)


class SharedRedisCache(RedisCache):
    """settings.CACHES backend: gateway_project.cache.SharedRedisCache."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedRedisCacheClient

    def run_script(self, source: str, keys: list[str], args: list):
        """Run a Lua script (EVALSHA) in one round trip; `keys` are cache keys, prefixed here."""
        return self._cache.run_script(source, [self.make_and_validate_key(key) for key in keys], args)
