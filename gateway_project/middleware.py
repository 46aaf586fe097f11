"""Infrastructure middleware (no product logic)."""

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
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


# Pages people open in a browser, with a session, and the management API (a session or a token).
# Proxied calls carry a key and never a session.
BROWSER_PATHS = ("/admin/", "/console/", "/api/")


def for_browser_pages(middleware_class):
    """The same middleware, run only on browser pages.

    Sessions, the user and messages serve the admin; on an API call they are CPU for nothing.
    (CSRF and frame options stay global: cheap, and `check --deploy` looks for them by name.)
    """

    class BrowserPagesOnly(middleware_class):
        def __call__(self, request):
            if request.path_info.startswith(BROWSER_PATHS):
                return super().__call__(request)
            return self.get_response(request)

    BrowserPagesOnly.__name__ = BrowserPagesOnly.__qualname__ = f"Browser{middleware_class.__name__}"
    return BrowserPagesOnly


BrowserSessionMiddleware = for_browser_pages(SessionMiddleware)
BrowserAuthenticationMiddleware = for_browser_pages(AuthenticationMiddleware)
BrowserMessageMiddleware = for_browser_pages(MessageMiddleware)
