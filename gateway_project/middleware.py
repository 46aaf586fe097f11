"""Infrastructure middleware (no product logic)."""

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware

# Pages people open in a browser, and the management API, with a session. Proxied calls carry a key
# and never a session.
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
