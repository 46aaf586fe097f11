"""Infrastructure middleware (no product logic)."""

from django.db import connections


class ReleaseDatabaseBeforeStreaming:
    """Give the request's database connections back before a streamed answer starts.

    Django returns them when the response closes, which for an AI stream is seconds or minutes
    later; a streamed call needs no database meanwhile (its log row is written by the
    background writer). Held that long, a few streams would take every connection of the pool
    (DATABASE_POOL_MAX) and the next calls that need one would wait and fail.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.streaming:
            for connection in connections.all(initialized_only=True):
                if not connection.in_atomic_block:
                    connection.close()  # back to the pool (PostgreSQL) or simply closed (SQLite)
        return response
