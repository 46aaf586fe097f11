"""The explorer's filtered rows as CSV or JSON lines, streamed row by row in constant memory.

Rows are read with iterator(chunk_size=...) (a server-side cursor on PostgreSQL) and each line is
sent as it is made; nothing collects the whole set. Times are UTC, ISO 8601.

A CSV is opened in spreadsheets, and much of a row comes from callers (path, model, request id,
the upstream's error text in detail): a cell a spreadsheet would read as a formula is neutralised
(OWASP's CSV injection rule: a leading =, +, -, @, tab or carriage return gets a single quote
before it). JSON lines are data for programs and stay exact.
"""

import csv
import json

from django.db.models import F
from django.http import StreamingHttpResponse

COLUMNS = (
    "created", "request_id", "job_id", "key_prefix", "key_name", "key_owner", "route_name", "method", "path",
    "model", "upstream_model", "status", "latency_ms", "upstream_ms", "target", "targets_tried", "attempts",
    "fallback_from", "streamed", "bytes_in", "bytes_out", "prompt_tokens", "completion_tokens", "total_tokens",
    "usage_estimated", "error_type", "limit", "client_ip", "detail", "cost", "team_name",
)  # fmt: skip
# The key as it is now (its name and owner; empty for a call without a key or of a deleted key):
# the row keeps only the prefix the call used.
KEY_COLUMNS = {"key_name": F("api_key__name"), "key_owner": F("api_key__owner")}
CHUNK = 2000


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(cell):
    """The cell as a spreadsheet should show it: text, never a formula."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


class _Line:
    """A file-like object whose write() returns the line, for csv.writer."""

    def write(self, text: str) -> str:
        return text


def _values(rows):
    rows = rows.annotate(**KEY_COLUMNS).order_by("-created", "-id")
    for row in rows.values_list(*COLUMNS).iterator(chunk_size=CHUNK):
        values = dict(zip(COLUMNS, row, strict=True))
        values["job_id"] = str(values["job_id"]) if values["job_id"] else None
        yield values


def _csv_lines(rows):
    writer = csv.writer(_Line())
    yield writer.writerow(COLUMNS)
    for row in _values(rows):
        row["created"] = row["created"].isoformat()
        row["targets_tried"] = json.dumps(row["targets_tried"])
        row["detail"] = json.dumps(row["detail"], separators=(",", ":"))
        yield writer.writerow([neutralised(row[name]) for name in COLUMNS])


def _json_lines(rows):
    for row in _values(rows):
        row["created"] = row["created"].isoformat()
        if row["cost"] is not None:
            row["cost"] = str(row["cost"])  # a decimal string, exact; null: no price
        yield json.dumps(row, separators=(",", ":")) + "\n"


FORMATS = {
    "csv": ("text/csv; charset=utf-8", _csv_lines),
    "jsonl": ("application/x-ndjson", _json_lines),
}


def response(rows, fmt: str, filename: str) -> StreamingHttpResponse:
    content_type, lines = FORMATS[fmt]
    answer = StreamingHttpResponse(lines(rows), content_type=content_type)
    answer["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    answer["Cache-Control"] = "no-store"
    return answer
