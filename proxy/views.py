"""The proxy view: every request outside the reserved paths comes here.

A thin adapter: HTTP in (an Incoming), the pipeline's streamed Answer out. The call path itself
is proxy/pipeline.py. DRF's settings for this view live on the class, so every other DRF view
(the management API) gets the project's defaults.
"""

from django.db import connections
from django.http import StreamingHttpResponse
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from gateway_project.client_address import trusted_chain

from . import pipeline, runtime
from .errors import exception_handler
from .negotiation import IgnoreAccept

METHODS = ["get", "post", "put", "patch", "delete", "head", "options"]


def read_body(request, limit: int) -> bytes:
    """At most limit + 1 bytes of the body, or 413 as soon as its length says it is larger."""
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise pipeline.too_large(limit)
    if not length and request.META.get("wsgi.input_terminated"):
        # A chunked body has no Content-Length, so Django would read nothing; the server (gunicorn)
        # marks the stream as ending by itself, so it is read from there.
        return request.META["wsgi.input"].read(limit + 1)
    return request.read(limit + 1)


def incoming(request) -> pipeline.Incoming:
    return pipeline.Incoming(
        method=request.method,
        path=request.path,
        query=request.META.get("QUERY_STRING", ""),
        headers=request.headers,
        read_body=lambda limit: read_body(request, limit),
        raw_path=request.META.get("RAW_URI", "").split("?", 1)[0],  # gunicorn keeps it; %2F stays %2F
        client_ip=request.client_ip,
        forwarded_for=trusted_chain(request.META),
        request_id=request.request_id,
        scheme=request.scheme,
        host=request.get_host(),
    )


def release_database() -> None:
    """Give the call's database connections back before its answer streams.

    Django returns them when the response closes, which for an AI stream is seconds or minutes
    later, and the stream needs none meanwhile (its log row is written by the background
    writer): held that long, a few streams would take the whole pool (DATABASE_POOL_MAX).
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()  # back to the pool (PostgreSQL) or simply closed (SQLite)


class ProxyView(APIView):
    authentication_classes = ()  # the pipeline authenticates (step 1)
    permission_classes = ()
    throttle_classes = ()
    parser_classes = ()  # the pipeline reads the body itself, under the route's limit
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = IgnoreAccept
    http_method_names = METHODS

    def get_exception_handler(self):
        return exception_handler  # the gateway's JSON error shape for every failure

    def initial(self, request, *args, **kwargs):
        """Nothing of DRF's own checks: the pipeline authenticates, permits and admits the call
        (steps 1 to 4), and nothing is rendered (the answer is the upstream's, an error is the JSON
        shape). With none configured, DRF still made an anonymous user and negotiated a renderer."""
        self.format_kwarg = None

    def proxy(self, request, *args, **kwargs):
        answer = pipeline.run(incoming(request._request), runtime.current())
        response = StreamingHttpResponse(answer, status=answer.status, reason=answer.reason)
        del response["Content-Type"]  # only what the upstream sent
        for name, value in answer.headers:
            response[name] = value
        release_database()
        return response

    get = post = put = patch = delete = head = options = proxy
    # Any other method goes through the pipeline too: authenticated, refused by the route table
    # (405, with the methods allowed) and logged like every call.
    http_method_not_allowed = proxy

    @property
    def default_response_headers(self):
        return {}  # DRF would add its own Allow and Vary to the upstream's answer


proxy_view = ProxyView.as_view()
