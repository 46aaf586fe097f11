"""Cursor pages that answer a cursor they did not make with a 400 in the JSON error shape.

DRF's CursorPagination answers an undecodable cursor with a 404 and passes the position it finds
inside a decodable one straight to the database, so a position that is not a time (or a time
PostgreSQL cannot hold) was a 500. Here every part of the cursor is checked before it is used.
"""

from base64 import b64decode
from datetime import UTC, datetime
from urllib import parse

from django.core.exceptions import ValidationError as ModelValidationError
from django.db import models
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError

INVALID = "This cursor is not one this list gave: start again from the first page (no cursor)."
MAX_INTEGER = 2**63 - 1


class CheckedCursorPagination(pagination.CursorPagination):
    def paginate_queryset(self, queryset, request, view=None):
        self.model = queryset.model  # decode_cursor checks the position against the ordering field
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is not None and not self.is_ours(encoded):
            raise ValidationError({self.cursor_query_param: [INVALID]})
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [INVALID]}) from None
        if cursor is None or cursor.position is None:
            return cursor
        try:
            position = self.checked_position(cursor.position)
        except (ModelValidationError, ValueError, OverflowError):
            raise ValidationError({self.cursor_query_param: [INVALID]}) from None
        return cursor._replace(position=position)

    @staticmethod
    def is_ours(encoded: str) -> bool:
        """Strict base64 of a query string of DRF's own parts (o, r, p), each once: DRF's own decoder
        skips what is not base64 and ignores what it does not know, so junk read as the first page."""
        try:
            text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            parts = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
        except ValueError:  # binascii.Error and UnicodeError are ValueErrors
            return False
        return bool(parts) and set(parts) <= {"o", "r", "p"} and all(len(values) == 1 for values in parts.values())

    def checked_position(self, text: str) -> str:
        """The position as the database can compare it: a time with its offset, moved to UTC; a
        number that fits a 64-bit integer. Raises ValueError (or a validation error) otherwise."""
        ordering = self.ordering[0] if isinstance(self.ordering, list | tuple) else self.ordering
        field = self.model._meta.get_field(ordering.lstrip("-"))
        value = field.to_python(text)
        if value is None:
            raise ValueError("no position")
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("a time without its offset")
            return value.astimezone(UTC).isoformat()
        if isinstance(field, models.IntegerField | models.AutoField) and not -MAX_INTEGER <= value <= MAX_INTEGER:
            raise ValueError("out of range")
        return str(value)
