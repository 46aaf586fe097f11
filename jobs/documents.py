"""A job as JSON: what GET /jobs/<id> answers and what a webhook POSTs."""

import base64

from .answers import readable
from .models import Job, Status


def when(value) -> str | None:
    return value.isoformat() if value is not None else None


def job_document(job: Job, raw: bool = False) -> dict:
    """`raw`: the answer's body as the upstream sent it (text), as this document gave it before
    it decoded JSON and assembled streams (answers.py)."""
    document = {
        "id": str(job.id),
        "object": "job",
        "status": job.status,
        "route": job.route_name,
        "method": job.method,
        "path": job.path,
        "created": when(job.created),
        "started": when(job.started),
        "finished": when(job.finished),
        "attempts": job.attempts,
    }
    if job.status == Status.SUCCEEDED:
        document["response"] = response_document(job, raw)
    if job.error:
        document["error"] = job.error
    if job.callback_url:
        document["callback_url"] = job.callback_url
    return document


def response_document(job: Job, raw: bool = False) -> dict:
    """The upstream's answer: headers as pairs; the body as JSON when it is JSON, a stream's final
    document with its `events` (answers.py), else the text when it is UTF-8, else base64."""
    body = bytes(job.response_body or b"")
    response = {"status": job.response_status, "headers": job.response_headers}
    if raw:
        try:
            response["body"] = body.decode()
        except UnicodeDecodeError:
            response["body_base64"] = base64.b64encode(body).decode()
        return response
    shown = readable(job.response_headers, body)
    if not shown:
        response["body_base64"] = base64.b64encode(body).decode()
    response.update(shown)
    return response


def deliveries_document(job: Job) -> list[dict]:
    """The webhook attempts as the job's key sees them: delivered or not, with the receiver's HTTP
    status (None when no HTTP answer came). Never the network detail (refused, timed out, which
    address): that would tell the key what listens where. Operators see it in the admin."""
    return [
        {"attempt": d.attempt, "at": when(d.created), "delivered": d.delivered, "status": d.status}
        for d in job.deliveries.all()
    ]
