"""Django's error views, answering with the gateway's JSON shape instead of HTML pages."""

from routes_admin.models import ErrorType

from .errors import error_response


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


def bad_request(request, exception=None):
    return error_response(400, ErrorType.INVALID_REQUEST, "Bad request.", _request_id(request))


def permission_denied(request, exception=None):
    return error_response(403, ErrorType.PERMISSION_DENIED, "Forbidden.", _request_id(request))


def not_found(request, exception=None):
    return error_response(404, ErrorType.NOT_FOUND, "Nothing here.", _request_id(request))


def server_error(request):
    return error_response(
        500, ErrorType.INTERNAL_ERROR, "The gateway failed to handle this call.", _request_id(request)
    )
