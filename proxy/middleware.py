"""Gives every request an id and a client address, and returns the id on every response."""

import re
import uuid

from gateway_project.client_address import client_ip_for

# A client's id is kept when it is a sane token; anything else is replaced, never echoed.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_for(value: str | None) -> str:
    if value and SANE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        request.client_ip = client_ip_for(request.META)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
