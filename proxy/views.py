"""The proxy view: every request outside the reserved paths comes here.

DRF runs the pipeline (authentication -> permission -> quotas); the view body matches the
route, forwards and returns the streaming answer. See DESIGN.md for the call path.
"""

from rest_framework.views import APIView

from . import breaker, config, quotas
from .attempts import forward
from .authentication import APIKeyAuthentication
from .call import Call
from .errors import GatewayError, KeyNotAllowed, PayloadTooLarge, describe
from .forwarding import Outgoing, stream_response
from .matching import by_path_and_method, choose
from .negotiation import IgnoreAccept
from .usage import ask_for_usage

METHODS = ["get", "post", "put", "patch", "delete", "head", "options"]


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this route allows ({limit} bytes).")


def read_body(request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed the limit (before the upstream hears of it)."""
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    if not length and request.META.get("wsgi.input_terminated"):
        # A chunked body has no Content-Length, so Django would read nothing; the server (gunicorn)
        # marks the stream as ending by itself, so it is read from there.
        body = request.META["wsgi.input"].read(limit + 1)
    else:
        body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    return body


class ProxyView(APIView):
    authentication_classes = [APIKeyAuthentication]
    content_negotiation_class = IgnoreAccept
    http_method_names = METHODS

    def initialize_request(self, request, *args, **kwargs):
        request.gateway_call = Call(
            request_id=request.request_id,
            method=request.method,
            path=request.path,
            client_ip=request.client_ip,
        )
        return super().initialize_request(request, *args, **kwargs)

    def check_permissions(self, request):
        """Steps 2 and 3: match the route, then check the key may call it."""
        django_request = request._request
        call = django_request.gateway_call
        candidates = by_path_and_method(config.current(), django_request.path, django_request.method)
        body = read_body(django_request, max(route.max_body_bytes for route in candidates))
        call.bytes_in = len(body)
        route, document = choose(candidates, django_request.headers, body)
        call.route = route
        if len(body) > route.max_body_bytes:
            raise too_large(route.max_body_bytes)
        if not call.key.may_call(route):
            raise KeyNotAllowed(f"This API key may not call the route {route.name}.")
        self.body, self.document = body, document

    def check_throttles(self, request):
        """Step 4: quotas and concurrency (proxy/quotas.py); a refusal raises RateLimited (429)."""
        call = request._request.gateway_call
        # The route's breaker states (step 5) ride along with the token counters' read.
        self.quota_state = quotas.admit(
            request._request, call, read_ahead=breaker.keys(t.id for t in call.route.targets)
        )

    def proxy(self, request, *args, **kwargs):
        django_request = request._request
        call = django_request.gateway_call
        body, document = ask_for_usage(django_request.path, self.body, self.document)
        call.counts_tokens = b'"model"' in body
        outgoing = Outgoing(
            method=django_request.method,
            path=django_request.path,
            query=django_request.META.get("QUERY_STRING", ""),
            body=body,
            document=document,
            meta=django_request.META,
            scheme=django_request.scheme,
            host=django_request.get_host(),
            request_id=call.request_id,
            client_ip=call.client_ip,
        )
        response = stream_response(call, forward(call, call.route, outgoing))
        quotas.add_headers(response, self.quota_state)
        return response

    get = post = put = patch = delete = head = options = proxy

    @property
    def default_response_headers(self):
        return {}  # DRF would add its own Allow and Vary to the upstream's answer

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        limit = exc.extra.get("limit", "") if isinstance(exc, GatewayError) else ""
        self.request._request.gateway_call.fail(response.status_code, describe(exc)[1], limit)
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        call = request._request.gateway_call
        if not response.streaming:
            # Errors the gateway answered itself: the call is over now.
            call.status = call.status or response.status_code
            call.finish()
        return response


proxy_view = ProxyView.as_view()
