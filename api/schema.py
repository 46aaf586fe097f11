"""OpenAPI details drf-spectacular cannot see: the token scheme and the error answers."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

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
