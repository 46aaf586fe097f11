"""What the management API reads and writes. The models' own clean() rules apply to every write
(reserved prefixes, the SSRF guard on target URLs...), and secrets are never returned: a key's or
token's secret only in the answer that creates it, a target's credential never (write-only)."""

from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from django.db import transaction
from rest_framework import serializers

from routes_admin import history, keys
from routes_admin.models import (
    RESERVED_AREAS,
    RESERVED_ENDPOINTS,
    APIKey,
    KeyUsage,
    Limits,
    ManagementToken,
    QuotaPlan,
    RequestLog,
    Route,
    UpstreamTarget,
    mask_secret,
)
from routes_admin.validators import host_and_port

from .fields import (
    ObjectField,
    StrictCharField,
    StrictIntegerField,
    StrictModelSerializer,
    StrictPrimaryKeyRelatedField,
    StringMapField,
)

# Longest grace period a rotation may give the old secret.
MAX_GRACE_SECONDS = 30 * 86400


def run_clean(instance) -> None:
    """The model's clean(), its ValidationError as DRF field messages."""
    try:
        instance.clean()
    except DjangoValidationError as exc:
        if hasattr(exc, "error_dict"):
            raise serializers.ValidationError(exc.message_dict) from None
        raise serializers.ValidationError({"non_field_errors": exc.messages}) from None


class PlanSerializer(StrictModelSerializer):
    class Meta:
        model = QuotaPlan
        fields = ["id", "name", *Limits.LIMIT_FIELDS, "created"]


class TargetSerializer(StrictModelSerializer):
    id = StrictIntegerField(
        required=False, help_text="An existing target of this route, to update it; leave out to add one."
    )
    credential_value = StrictCharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=1000,
        help_text="Write-only. Left out on an existing target: the stored value is kept.",
    )
    credential = serializers.SerializerMethodField(help_text="The stored credential, masked (last 4 characters).")
    model_aliases = StringMapField(required=False, help_text="Public model name -> the name sent upstream.")

    class Meta:
        model = UpstreamTarget
        fields = [
            "id",
            "name",
            "url",
            "weight",
            "position",
            "enabled",
            "credential_header",
            "credential_value",
            "credential",
            "model_aliases",
        ]
        extra_kwargs = {"name": {"required": False}}

    def get_credential(self, target) -> str:
        return mask_secret(target.credential_value)


class PathPrefixValidator(RegexValidator):
    """Route.clean()'s prefix rules as a pattern, so that the schema states them; its messages."""

    def __init__(self):
        reserved = "|".join(RESERVED_AREAS + RESERVED_ENDPOINTS)
        super().__init__(rf"^/(?!(?:{reserved})(?:/|$))[^\x00]*$")

    def __call__(self, value):
        try:
            super().__call__(value)
        except DjangoValidationError:
            try:
                Route(path_prefix=value).clean()  # the model's own message for a missing / or a reserved prefix
            except DjangoValidationError as exc:
                raise DjangoValidationError(exc.message_dict.get("path_prefix", exc.messages)) from None
            raise DjangoValidationError("Null characters are not allowed.") from None


# The rules of Route.clean() that a pattern can state, so that the schema states them too.
PATH_PREFIX = PathPrefixValidator()
_STATUS = r"[ \t\r]*(?:[1-5][0-9]{2})?[ \t\r]*"
RETRY_STATUSES = RegexValidator(rf"^{_STATUS}(?:[,\n]{_STATUS})*$", "HTTP statuses (100-599), separated by commas.")


class RouteSerializer(StrictModelSerializer):
    targets = TargetSerializer(many=True, required=False, help_text="Given on an update: the route's whole list.")
    match_headers = StringMapField(
        required=False, help_text='Headers that must be present, e.g. {"X-Tenant": "acme"}; "*" matches any value.'
    )
    match_body = ObjectField(
        required=False, help_text='JSON body fields that must match, e.g. {"stream": true}; dotted paths allowed.'
    )

    class Meta:
        model = Route
        fields = ["id", *Route.SETTINGS, "fallback", "quota_plan", "targets", "created", "updated"]
        extra_kwargs = {
            "path_prefix": {"validators": [PATH_PREFIX]},
            "retry_statuses": {"validators": [RETRY_STATUSES]},
        }

    def validate(self, attrs):
        route = Route(**{**self._current_fields(), **{k: v for k, v in attrs.items() if k != "targets"}})
        route.pk = self.instance.pk if self.instance else None
        run_clean(route)
        if "targets" in attrs:
            attrs["targets"] = self._checked_targets(attrs["targets"])
        return attrs

    def _current_fields(self) -> dict:
        if self.instance is None:
            return {}
        return {f.name: getattr(self.instance, f.name) for f in Route._meta.concrete_fields if not f.primary_key}

    def _checked_targets(self, targets: list[dict]) -> list[dict]:
        """Each target as it will be saved, checked by UpstreamTarget.clean(); errors by position."""
        existing = {t.id: t for t in self.instance.targets.all()} if self.instance else {}
        errors, names = [], set()
        for fields in targets:
            error = {}
            old = existing.get(fields["id"]) if "id" in fields else None
            if "id" in fields and old is None:
                error["id"] = [f"This route has no target {fields['id']}."]
            # As it will be saved: the stored values (the credential included) unless given.
            current = {f.name: getattr(old, f.name) for f in UpstreamTarget._meta.concrete_fields} if old else {}
            current.pop("id", None)
            current.pop("route", None)
            target = UpstreamTarget(**{**current, **{k: v for k, v in fields.items() if k != "id"}})
            try:
                run_clean(target)
            except serializers.ValidationError as exc:
                error.update(exc.detail)
            name = target.name or host_and_port(target.url) or "target"  # as UpstreamTarget.save()
            if name in names:
                error["name"] = [f"Two targets of this route are named {name!r}."]
            names.add(name)
            errors.append(error)
        if any(errors):
            raise serializers.ValidationError({"targets": errors})
        return targets

    @transaction.atomic
    def create(self, validated_data):
        targets = validated_data.pop("targets", [])
        route = Route.objects.create(**validated_data)
        for fields in targets:
            fields.pop("id", None)
            UpstreamTarget.objects.create(route=route, **fields)
        return route

    @transaction.atomic
    def update(self, route, validated_data):
        targets = validated_data.pop("targets", None)
        for name, value in validated_data.items():
            setattr(route, name, value)
        route.save()
        if targets is not None:
            keep = {fields["id"] for fields in targets if "id" in fields}
            for gone in route.targets.exclude(id__in=keep):
                gone.delete()  # one by one, so the change is announced like any other
            for fields in targets:
                if "id" in fields:
                    target = route.targets.get(pk=fields["id"])  # the fields left out keep their values
                    for name, value in fields.items():
                        setattr(target, name, value)
                else:
                    target = UpstreamTarget(route=route, **fields)
                target.save()
        return route


def key_has_reach(attrs: dict, instance: APIKey | None) -> None:
    """A key's reach is always explicit: some routes, or all routes."""
    all_routes = attrs.get("all_routes", instance.all_routes if instance else False)
    routes = attrs["routes"] if "routes" in attrs else (list(instance.routes.all()) if instance else [])
    if not all_routes and not routes:
        raise serializers.ValidationError({"routes": ["Say which routes the key may call, or set all_routes."]})


class KeySerializer(StrictModelSerializer):
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    user = StrictPrimaryKeyRelatedField(queryset=get_user_model().objects.all(), required=False, allow_null=True)
    previous_secret_expires = serializers.DateTimeField(
        source="previous_expires",
        read_only=True,
        allow_null=True,
        help_text="When the secret replaced by the last rotation stops.",
    )

    class Meta:
        model = APIKey
        fields = [
            "id",
            "name",
            "owner",
            "user",
            "prefix",
            "enabled",
            "all_routes",
            "routes",
            "quota_plan",
            *Limits.LIMIT_FIELDS,
            "expires",
            "revoked",
            "rotated",
            "previous_secret_expires",
            "created",
        ]
        read_only_fields = ["revoked", "rotated", "created"]

    def validate(self, attrs):
        key_has_reach(attrs, self.instance)
        return attrs

    @transaction.atomic
    def create(self, validated_data):
        routes = validated_data.pop("routes", [])
        key, secret = APIKey.objects.issue(**validated_data)
        key.secret = secret  # in this answer only
        key.routes.set(routes)
        return key

    @transaction.atomic
    def update(self, key, validated_data):
        return super().update(key, validated_data)


class IssuedKeySerializer(KeySerializer):
    """A key with its secret: only in the answer that issues or rotates it."""

    secret = serializers.CharField(read_only=True, help_text="Shown once: only its hash is stored.")

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "secret"]


class RotateSerializer(serializers.Serializer):
    grace_seconds = StrictIntegerField(
        default=0,
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        help_text="How long the old secret keeps working; 0 refuses it at once.",
    )


class UsagePeriodSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    tokens_limit = serializers.IntegerField(allow_null=True)


class LiveQuotaSerializer(serializers.Serializer):
    name = serializers.CharField()
    limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    reset = serializers.IntegerField(help_text="Seconds until the window resets (0: not a window).")


class KeyUsageSummarySerializer(serializers.Serializer):
    today = UsagePeriodSerializer()
    this_month = UsagePeriodSerializer()
    live = LiveQuotaSerializer(many=True, allow_null=True, help_text="The live counters; null if the cache is down.")


class UsageSerializer(serializers.ModelSerializer):
    class Meta:
        model = KeyUsage
        fields = ["id", "api_key", "day", "requests", "prompt_tokens", "completion_tokens", "total_tokens"]


class RequestLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = RequestLog
        fields = [f.name for f in RequestLog._meta.fields]


class TokenSerializer(StrictModelSerializer):
    prefix = serializers.SerializerMethodField()

    class Meta:
        model = ManagementToken
        fields = ["id", "name", "prefix", "created", "last_used", "revoked"]
        read_only_fields = ["revoked"]

    def get_prefix(self, token) -> str:
        return f"{keys.TOKEN_START}{token.prefix}_…"


class IssuedTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once: only its hash is stored.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]


class HistorySerializer(serializers.ModelSerializer):
    """One change: who, when, from where, to which object, each field before and after (secrets masked)."""

    ACTIONS = {LogEntry.Action.CREATE: "create", LogEntry.Action.UPDATE: "update", LogEntry.Action.DELETE: "delete"}

    action = serializers.SerializerMethodField()
    model = serializers.SerializerMethodField(help_text='"app_label.model", e.g. "routes_admin.route".')
    who = serializers.SerializerMethodField(help_text="The user, or the command, that made the change.")
    changes = serializers.SerializerMethodField(
        help_text='Field -> [before, after]; a many-to-many field -> {"type": "m2m", "operation", "objects"}.'
    )

    class Meta:
        model = LogEntry
        fields = ["id", "timestamp", "action", "model", "object_pk", "object_repr", "who", "actor", "remote_addr"]
        fields += ["changes"]

    def get_action(self, entry) -> str:
        return self.ACTIONS.get(entry.action, "other")

    def get_model(self, entry) -> str:
        return f"{entry.content_type.app_label}.{entry.content_type.model}"

    def get_who(self, entry) -> str:
        return history.author(entry)

    def get_changes(self, entry) -> dict:
        return entry.changes or {}
