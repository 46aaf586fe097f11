"""Serializer fields that take the JSON type the schema states and nothing else.

DRF coerces by default: `"name": 0` becomes "0", `"enabled": "yes"` becomes true, `"weight": "5"`
becomes 5 and `"routes": ["1"]` finds route 1. The schema says string, boolean, integer; a client
that sends another type has a bug worth a 400, not a guess. The write-only JSON objects state
their shape in the schema, so that null or a list is refused in the documentation too.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# Django refuses a NUL character in any text it is given (PostgreSQL cannot store one): stated.
NO_NUL = "^[^\\x00]*$"


def _is_number(data) -> bool:
    return isinstance(data, int | float) and not isinstance(data, bool)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictURLField(serializers.URLField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if not _is_number(data) or (isinstance(data, float) and not data.is_integer()):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if not _is_number(data):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^-?\d+(\.\d+)?$"})
class StrictDecimalField(serializers.DecimalField):
    """An amount of money as a decimal string ("0.15"): a JSON number is read as a binary float
    by every JSON parser, and 0.1 as a float is not 0.1."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError('Give the amount as a decimal string, like "0.15", not a JSON number.')
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


class JSONObjectField(serializers.JSONField):
    """A JSON object (never null, a list or a scalar)."""

    default_error_messages = {"not_an_object": "A JSON object is required."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_an_object")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class StringMapField(JSONObjectField):
    """A JSON object whose values are strings (header conditions, model aliases)."""

    default_error_messages = {"not_strings": "Every value is a string."}

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not all(isinstance(value, str) for value in data.values()):
            self.fail("not_strings")
        return data


@extend_schema_field({"type": "object", "additionalProperties": True})
class ObjectField(JSONObjectField):
    pass


def _strict_mapping() -> dict:
    strict = {
        serializers.CharField: StrictCharField,
        serializers.URLField: StrictURLField,
        serializers.IntegerField: StrictIntegerField,
        serializers.FloatField: StrictFloatField,
        serializers.BooleanField: StrictBooleanField,
        serializers.DecimalField: StrictDecimalField,
    }
    return {
        model: strict.get(field, field) for model, field in serializers.ModelSerializer.serializer_field_mapping.items()
    }


class StrictModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose generated fields are the strict ones above."""

    serializer_field_mapping = _strict_mapping()
    serializer_related_field = StrictPrimaryKeyRelatedField
