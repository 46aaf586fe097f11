"""GET /jobs/<id> (status and result), DELETE /jobs/<id> (cancel a queued job), and
GET /jobs/webhook-secret (the key's webhook signing secret).

Authenticated with the same gateway API keys as proxied calls; a job is visible only to the key
that created it: any other key, an unknown id and a malformed id all get the same 404. With the
database away they answer 503 in the gateway's JSON shape within GATEWAY_CONFIG_DB_TIMEOUT, not
a 500 after the pool's DATABASE_POOL_TIMEOUT (a fault run saw 11 such 500s after 10 s each).
"""

import functools
import uuid

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from proxy.jobs_api import (
    GatewayError,
    InvalidAPIKey,
    connect_database,
    describe,
    error_response,
    key_from_request,
)
from routes_admin.models import ErrorType

from . import signing
from .documents import deliveries_document, job_document
from .models import Job, Status


def _error(request, exc: GatewayError):
    status, error_type, message, headers = describe(exc)
    return error_response(status, error_type, message, request.request_id, headers)


def _not_found(request):
    return error_response(404, ErrorType.NOT_FOUND, "No such job for this API key.", request.request_id)


def database_or_503(view):
    """The view with its database reads bounded: 503 when the database does not answer."""

    @functools.wraps(view)
    def bounded(request, *args, **kwargs):
        try:
            connect_database(settings.GATEWAY_CONFIG_DB_TIMEOUT)
            return view(request, *args, **kwargs)
        except DatabaseError:
            message = "The job store is unavailable right now; try again shortly."
            return error_response(503, ErrorType.SERVICE_UNAVAILABLE, message, request.request_id)

    return bounded


@csrf_exempt  # API keys, not cookies: nothing for a cross-site form to ride on
@require_http_methods(["GET", "DELETE"])
@database_or_503
def job_detail(request, job_id: str):
    try:
        key = key_from_request(request.headers)
    except GatewayError as exc:
        return _error(request, exc)
    try:
        job_uuid = uuid.UUID(job_id)
    except ValueError:
        return _not_found(request)
    job = Job.objects.filter(id=job_uuid, api_key_id=key.id).first()
    if job is None:
        return _not_found(request)
    if request.method == "DELETE":
        cancelled = Job.objects.filter(id=job.id, status=Status.QUEUED).update(
            status=Status.CANCELLED, finished=timezone.now()
        )
        job.refresh_from_db()
        if not cancelled:
            return error_response(
                409,
                ErrorType.CONFLICT,
                f"Only a queued job can be cancelled; this one is {job.status}.",
                request.request_id,
            )
    document = job_document(job, raw=request.GET.get("raw") in ("1", "true"))
    if job.callback_url:
        document["webhook_deliveries"] = deliveries_document(job)
    return JsonResponse(document)


@require_http_methods(["GET"])
@database_or_503
def webhook_secret(request):
    """The secret this key's webhooks are signed with (jobs/signing.py), for the key's owner to
    set up a receiver. Whoever holds the key may queue jobs with callbacks anyway; the secret
    changes when the key is rotated."""
    try:
        key = key_from_request(request.headers)
    except GatewayError as exc:
        return _error(request, exc)
    if not settings.GATEWAY_WEBHOOK_HOSTS:
        return error_response(404, ErrorType.NOT_FOUND, "This gateway sends no webhooks.", request.request_id)
    secret = signing.secret_for_key(key.id)
    if secret is None:
        return _error(request, InvalidAPIKey())
    response = JsonResponse({"object": "webhook_secret", "secret": secret})
    response["Cache-Control"] = "no-store"
    return response
