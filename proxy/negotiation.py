"""Content negotiation for the proxy view: the client's Accept header is the upstream's business.

DRF would answer 406 to `Accept: text/event-stream` (what streaming clients send) before the
call is even forwarded; the gateway's own errors are JSON whatever the client accepts.
"""

from rest_framework.negotiation import BaseContentNegotiation


class IgnoreAccept(BaseContentNegotiation):
    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
