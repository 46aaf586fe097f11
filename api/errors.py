"""The API's errors in the gateway's one JSON shape; validation errors add their field messages."""

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.views import set_rollback

from proxy.errors import describe, error_response
from routes_admin.models import ErrorType
from routes_admin.services import ServiceError
from routes_admin.services.errors import ALL


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    request = context.get("request")
    request_id = getattr(request, "request_id", "") if request is not None else ""
    if isinstance(exc, exceptions.ValidationError):
        set_rollback()
        return validation_error(exc.detail, request_id)
    if isinstance(exc, ServiceError):  # a change the service layer refused
        set_rollback()
        fields = {("non_field_errors" if name == ALL else name): value for name, value in exc.errors.items()}
        return validation_error(fields, request_id)
    status, error_type, message, headers = describe(exc)
    if status == 500:
        return None  # a bug, not an API error: Django's handler500 answers (in the same shape) and logs it
    set_rollback()
    return error_response(status, error_type, message, request_id, headers)


def validation_error(detail, request_id: str) -> JsonResponse:
    """400 with each field's messages, e.g. {"fields": {"path_prefix": ["/admin is reserved ..."]}}."""
    fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    body = {
        "error": {
            "type": ErrorType.INVALID_REQUEST,
            "message": "The request is not valid: see fields.",
            "request_id": request_id,
            "fields": fields,
        }
    }
    response = JsonResponse(body, status=400)
    if request_id:
        response["X-Request-ID"] = request_id
    return response
