"""OpenAPI details drf-spectacular cannot see: the token scheme and the error answers."""

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension

from .fields import NO_NUL

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "fields": {"type": "object", "description": "On a 400: each field's messages."},
            },
        }
    },
}

ERRORS = {
    "400": "Invalid input: `fields` holds each field's messages.",
    "401": "No valid management token or session.",
    "403": "The user's role does not allow this.",
    "404": "No such object.",
}


class ManagementTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ManagementTokenAuthentication"
    name = "managementToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A management token: gwm_..."}


class StrictTextSchema(OpenApiSerializerFieldExtension):
    """A text field of the API states that it takes no NUL character, unless it states a pattern of its own."""

    target_class = "api.fields.StrictCharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        own_pattern = any(isinstance(v, RegexValidator) for v in self.target.validators)
        if direction == "request" and schema.get("type") == "string" and not own_pattern:
            schema["pattern"] = NO_NUL
        return schema


def api_views_only(endpoints):
    """The schema describes the API's own views: not the proxy's catch-all, nor the schema pages."""
    from .views import ManagementViewSet

    return [endpoint for endpoint in endpoints if issubclass(getattr(endpoint[3], "cls", object), ManagementViewSet)]


def document_errors(result, generator, request, public):
    """Every operation may answer the gateway's JSON error shape with these statuses."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERRORS.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result


# "A key names its routes": a new key has routes, or all_routes (api/serializers.py key_has_reach).
KEY_REACH = [
    {"required": ["all_routes"], "properties": {"all_routes": {"enum": [True]}}},
    {"required": ["routes"], "properties": {"routes": {"minItems": 1}}},
]


def state_rules(result, generator, request, public):
    """Rules the serializers enforce that drf-spectacular cannot see, stated in the schema."""
    schemas = result.get("components", {}).get("schemas", {})
    if "KeyRequest" in schemas:
        schemas["KeyRequest"]["anyOf"] = KEY_REACH
        schemas["KeyRequest"]["description"] = "A new key names its routes (at least one), or sets all_routes."
    if "PatchedKeyRequest" in schemas:
        schemas["PatchedKeyRequest"]["description"] = (
            "The key must keep naming its routes, or all_routes: a change that would leave it neither is a 400."
        )
    return result


def state_no_nul_in_text_filters(result, generator, request, public):
    """Every text query parameter refuses a NUL character (Django's form fields do): stated on each
    one here, after the filters' own schemas are built, so none loses its maxLength or format."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if (
                    parameter.get("in") == "query"
                    and schema.get("type") == "string"
                    and not schema.keys()
                    & {
                        "pattern",
                        "enum",
                    }
                ):
                    schema["pattern"] = NO_NUL
    return result
