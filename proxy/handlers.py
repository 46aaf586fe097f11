"""Django's error views, answering with the gateway's JSON shape instead of HTML pages."""

from .errors import error_response


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


def bad_request(request, exception=None):
    return error_response(400, "invalid_request_error", "Bad request.", _request_id(request))


def permission_denied(request, exception=None):
    return error_response(403, "permission_denied", "Forbidden.", _request_id(request))


def not_found(request, exception=None):
    return error_response(404, "not_found", "Nothing here.", _request_id(request))


def server_error(request):
    return error_response(500, "internal_error", "The gateway failed to handle this call.", _request_id(request))
