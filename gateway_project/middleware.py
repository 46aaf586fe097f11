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
    (Proxied calls never reach them: ProxiedPathsMiddleware, below, comes first. CSRF and frame
    options stay in MIDDLEWARE as Django ships them: `check --deploy` looks for them by name.)
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


class ProxiedPathsMiddleware:
    """Hands a proxied call (any path outside the reserved ones) straight to the proxy view.

    What comes after this middleware in MIDDLEWARE (static files, sessions, CSRF, the user, the
    change history, messages, the sign-in lockout) and the URL table serve the browser pages and
    the API, and did nothing for a proxied call but cost it about 0.25 M instructions, 5 % of the
    call. The URL table's own rule decides (gateway_project/urls.py, PROXIED), so a path reaches
    the same view either way. What every answer gets stays: the request id and the security headers
    (the middleware before this one), X-Frame-Options (XFrameOptionsMiddleware, kept here), the Host
    check and an error answer's Content-Length (CommonMiddleware's, done here).
    """

    def __init__(self, get_response):
        from django.core.handlers.exception import convert_exception_to_response
        from django.middleware.clickjacking import XFrameOptionsMiddleware

        from proxy.views import proxy_view

        from .urls import PROXIED

        self.get_response = get_response
        self.proxied = PROXIED.match
        self.proxy = convert_exception_to_response(XFrameOptionsMiddleware(proxy_view))

    def __call__(self, request):
        if not self.proxied(request.path_info[1:]):
            return self.get_response(request)
        request.get_host()  # a Host outside ALLOWED_HOSTS: the JSON 400 (handler400), as CommonMiddleware gave it
        response = self.proxy(request)
        if not response.streaming and not response.has_header("Content-Length"):
            # As CommonMiddleware does: an error answer says its length, so the connection stays
            # usable without chunked encoding (and a client reading it raw knows where it ends).
            response.headers["Content-Length"] = str(len(response.content))
        return response
