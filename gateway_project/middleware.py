"""Infrastructure middleware (no product logic)."""

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware

from gateway_project.client_address import client_ip_for
from routes_admin.history import recorded_as

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


class ChangeHistoryMiddleware:
    """Names the signed-in user and the client's real address in the change history entries.

    Browser pages and the API only: the proxy's paths never change the configuration.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(BROWSER_PATHS):
            return self.get_response(request)

        def signed_in():
            # Read when an entry is written: the API authenticates inside its view, after this runs.
            user = getattr(request, "user", None)
            return user if user is not None and user.is_authenticated else None

        with recorded_as(signed_in, remote_addr=client_ip_for(request.META)):
            return self.get_response(request)
