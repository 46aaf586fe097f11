"""The one JSON error shape, OpenAI style: {"error": {"type", "message", "request_id"}}."""

import logging

from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.views import set_rollback

from routes_admin.models import ErrorType

log = logging.getLogger("gateway.errors")


class GatewayError(exceptions.APIException):
    """An error the gateway answers itself. Subclasses set the status and the error type."""

    status_code = 500
    error_type = ErrorType.INTERNAL_ERROR
    default_detail = "The gateway failed to handle this call."

    def __init__(self, message: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message or self.default_detail)
        self.headers = headers or {}
        self.extra = extra


class InvalidAPIKey(GatewayError):
    status_code = 401
    error_type = ErrorType.INVALID_API_KEY
    default_detail = "A valid API key is required (Authorization: Bearer <key> or X-API-Key: <key>)."


class KeyNotAllowed(GatewayError):
    status_code = 403
    error_type = ErrorType.PERMISSION_DENIED
    default_detail = "This API key may not call this route."


class RouteNotFound(GatewayError):
    status_code = 404
    error_type = ErrorType.NOT_FOUND
    default_detail = "No route matches this path."


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = ErrorType.METHOD_NOT_ALLOWED


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = ErrorType.REQUEST_TOO_LARGE


class RequestTimeout(GatewayError):
    """Raised by the server's worker while the body is read (gateway_project/worker.py)."""

    status_code = 408
    error_type = ErrorType.REQUEST_TIMEOUT
    default_detail = "The request body did not arrive in time."


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = ErrorType.INVALID_REQUEST


class RateLimited(GatewayError):
    status_code = 429
    error_type = ErrorType.RATE_LIMIT_EXCEEDED


class CacheUnavailable(GatewayError):
    status_code = 503
    error_type = ErrorType.SERVICE_UNAVAILABLE
    default_detail = "The gateway cannot check quotas right now; try again shortly."


class ConfigUnavailable(GatewayError):
    status_code = 503
    error_type = ErrorType.SERVICE_UNAVAILABLE
    default_detail = "The gateway cannot reach its configuration database right now; try again shortly."


class UpstreamUnavailable(GatewayError):
    status_code = 502
    error_type = ErrorType.UPSTREAM_UNAVAILABLE
    default_detail = "The upstream service could not be reached."


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = ErrorType.UPSTREAM_TIMEOUT
    default_detail = "The upstream service did not answer in time."


def error_response(status: int, error_type: str, message: str, request_id: str = "", headers=None) -> JsonResponse:
    response = JsonResponse(
        {"error": {"type": error_type, "message": message, "request_id": request_id}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    if request_id:
        response["X-Request-ID"] = request_id
    return response


# DRF's own exceptions, in the error types an OpenAI client expects.
DRF_TYPES = {
    exceptions.ParseError: ErrorType.INVALID_REQUEST,
    exceptions.AuthenticationFailed: ErrorType.INVALID_API_KEY,
    exceptions.NotAuthenticated: ErrorType.INVALID_API_KEY,
    exceptions.PermissionDenied: ErrorType.PERMISSION_DENIED,
    exceptions.NotFound: ErrorType.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorType.METHOD_NOT_ALLOWED,
    exceptions.Throttled: ErrorType.RATE_LIMIT_EXCEEDED,
}


def describe(exc) -> tuple[int, str, str, dict]:
    """Status, error type, message and headers for any exception raised while handling a call."""
    if isinstance(exc, GatewayError):
        return exc.status_code, exc.error_type, str(exc.detail), exc.headers
    if isinstance(exc, exceptions.APIException):
        error_type = next((t for cls, t in DRF_TYPES.items() if isinstance(exc, cls)), ErrorType.INVALID_REQUEST)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return exc.status_code, error_type, str(exc.detail), headers
    return 500, ErrorType.INTERNAL_ERROR, GatewayError.default_detail, {}


def exception_handler(exc, context) -> JsonResponse:
    """The proxy view's DRF exception handler: every failure, known or not, as the JSON shape."""
    request = context.get("request")
    request_id = getattr(request, "request_id", "") if request is not None else ""
    status, error_type, message, headers = describe(exc)
    if status == 500:
        log.error("unhandled error in %s (request id %s)", context.get("view"), request_id, exc_info=exc)
    if isinstance(exc, InvalidAPIKey):
        headers = {"WWW-Authenticate": 'Bearer realm="gateway"', **headers}
    set_rollback()
    response = error_response(status, error_type, message, request_id, headers)
    if isinstance(exc, GatewayError) and status >= 500:
        # An unreachable, failing or slow upstream is an expected outcome the gateway answered
        # for, not a bug in it: a WARNING line, instead of django.request's ERROR for any 5xx.
        log.warning("%s %s for request %s: %s", status, error_type, request_id, message)
        response._has_been_logged = True
    return response
