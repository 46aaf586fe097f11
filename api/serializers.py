"""What the management API reads and writes. Every write goes through the service layer
(routes_admin/services), which holds the rules and checks; its ServiceError is answered as a 400
with field messages (api/errors.py). Secrets are never returned: a key's or token's secret only in
the answer that creates it, a target's credential never (write-only)."""

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from rest_framework import serializers

from routes_admin import history, keys
from routes_admin.models import (
    RESERVED_AREAS,
    RESERVED_ENDPOINTS,
    APIKey,
    Budgets,
    KeyUsage,
    Limits,
    ManagementToken,
    ModelPrice,
    QuotaPlan,
    RequestLog,
    Route,
    Team,
    UpstreamTarget,
    mask_secret,
)
from routes_admin.services import keys as key_service
from routes_admin.services import plans, routes, spend

from .fields import (
    ObjectField,
    StrictCharField,
    StrictIntegerField,
    StrictModelSerializer,
    StrictPrimaryKeyRelatedField,
    StringMapField,
)

# Longest grace period a rotation may give the old secret.
MAX_GRACE_SECONDS = int(key_service.MAX_GRACE.total_seconds())


class PlanSerializer(StrictModelSerializer):
    class Meta:
        model = QuotaPlan
        fields = ["id", "name", *Limits.LIMIT_FIELDS, "created"]

    def create(self, validated_data):
        return plans.save_plan(None, validated_data)

    def update(self, plan, validated_data):
        return plans.save_plan(plan, validated_data)


class PriceSerializer(StrictModelSerializer):
    """One entry of the price list, in GATEWAY_CURRENCY: amounts as decimal strings."""

    currency = serializers.SerializerMethodField(help_text="GATEWAY_CURRENCY: every amount is in it.")

    class Meta:
        model = ModelPrice
        fields = ["id", *spend.PRICE_FIELDS, "currency", "created"]
        extra_kwargs = {"valid_from": {"required": False}}

    def get_currency(self, price) -> str:
        return settings.GATEWAY_CURRENCY

    def create(self, validated_data):
        return spend.save_price(None, validated_data)

    def update(self, price, validated_data):
        return spend.save_price(price, validated_data)


class TeamSerializer(StrictModelSerializer):
    keys = serializers.PrimaryKeyRelatedField(many=True, read_only=True, help_text="The team's keys (set on each key).")

    class Meta:
        model = Team
        fields = ["id", *spend.TEAM_FIELDS, "keys", "created"]

    def create(self, validated_data):
        return spend.save_team(team=None, **validated_data)

    def update(self, team, validated_data):
        return spend.save_team(team=team, **validated_data)


class TargetSerializer(StrictModelSerializer):
    id = StrictIntegerField(
        required=False, help_text="An existing target of this route, to update it; leave out to add one."
    )
    credential_value = StrictCharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=1000,
        help_text="Write-only. Left out on an existing target: the stored value is kept, unless the URL's "
        "scheme, host or port changes (then it is dropped, and refused while credential_header stays set).",
    )
    credential = serializers.SerializerMethodField(help_text="The stored credential, masked (last 4 characters).")
    model_aliases = StringMapField(required=False, help_text="Public model name -> the name sent upstream.")

    class Meta:
        model = UpstreamTarget
        fields = ["id", *routes.TARGET_FIELDS, "credential"]
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

    warnings = serializers.SerializerMethodField(
        help_text="What is saved but cannot work as meant: no enabled target, or another enabled route with the "
        "same prefix, priority and conditions (one of them never serves a call). Empty when all is well."
    )

    class Meta:
        model = Route
        fields = ["id", *Route.SETTINGS, "fallback", "quota_plan", "targets", "warnings", "created", "updated"]
        extra_kwargs = {
            "path_prefix": {"validators": [PATH_PREFIX]},
            "retry_statuses": {"validators": [RETRY_STATUSES]},
        }

    def create(self, validated_data):
        targets = validated_data.pop("targets", [])
        return routes.save_route(None, validated_data, targets).route

    def update(self, route, validated_data):
        targets = validated_data.pop("targets", None)
        return routes.save_route(route, validated_data, targets).route

    def get_warnings(self, route) -> list[str]:
        # Once per answer, after its write (a list of routes reads the configuration once).
        if "route_warnings" not in self.context:
            self.context["route_warnings"] = routes.configuration_warnings()
        return self.context["route_warnings"].get(route.name, [])


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
            "team",
            *Budgets.BUDGET_FIELDS,
            "expires",
            "revoked",
            "rotated",
            "previous_secret_expires",
            "created",
        ]
        read_only_fields = ["revoked", "rotated", "created"]

    def create(self, validated_data):
        reach = validated_data.pop("routes", [])
        key, key.secret = key_service.issue_key(validated_data, reach)  # the secret in this answer only
        return key

    def update(self, key, validated_data):
        reach = validated_data.pop("routes", None)  # left out: the key keeps its routes
        return key_service.update_key(key, validated_data, reach)


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
