"""The management API: routes (with their targets), plans, keys, request logs, usage and tokens.

Every view says how it authenticates, what it parses and renders and which permissions it
needs, rather than inheriting the proxy's REST_FRAMEWORK settings.
"""

from datetime import timedelta

from auditlog.models import LogEntry
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, pagination, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from proxy.state import quota_state
from routes_admin.filtersets import GROUPS, RequestLogFilterSet, summarize
from routes_admin.models import (
    APIKey,
    BudgetAlert,
    ErrorType,
    KeyUsage,
    ManagementToken,
    ModelPrice,
    QuotaPlan,
    RequestLog,
    Route,
    Team,
)
from routes_admin.services import keys as key_service
from routes_admin.services import plans, routes, spend, tokens

from . import errors, filters
from . import serializers as api
from .authentication import ManagementTokenAuthentication
from .pagination import CheckedCursorPagination
from .permissions import ChangePermission, ModelPermissions


class StrictPageSize:
    """`page_size` checked: DRF reads a wrong one (0, "ten", 501, given twice) as the default."""

    def get_page_size(self, request):
        given = request.query_params.getlist(self.page_size_query_param)
        if not given:
            return self.page_size
        if len(given) > 1 or not given[0].isdigit() or not 1 <= int(given[0]) <= self.max_page_size:
            raise serializers.ValidationError(
                {self.page_size_query_param: [f"Give one whole number from 1 to {self.max_page_size}."]}
            )
        return int(given[0])

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
            if parameter["name"] == getattr(self, "page_query_param", None):
                parameter["schema"]["minimum"] = 1
        return parameters


class PagePagination(StrictPageSize, pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class LogPagination(StrictPageSize, CheckedCursorPagination):
    """Stable pages over a table that grows while it is read."""

    ordering = "-created"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


def no_store(response: Response) -> Response:
    """The answer carries a secret: no cache may keep it."""
    response["Cache-Control"] = "no-store"
    return response


class ManagementViewSet(viewsets.GenericViewSet):
    # A session (the signed-in admin user) needs the CSRF token on writes; DRF checks it.
    authentication_classes = [ManagementTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, ModelPermissions]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    filter_backends = [DjangoFilterBackend]
    pagination_class = PagePagination

    def get_exception_handler(self):
        return errors.exception_handler

    def perform_create(self, serializer):
        with_integrity_as_400(serializer.save)

    def perform_update(self, serializer):
        with_integrity_as_400(serializer.save)


class SelfRevocation(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = (
        "This is the token authenticating this request: revoking it would lock this client out. "
        "Add ?confirm=self to revoke it anyway, or revoke it with another token or from the admin."
    )
    default_code = ErrorType.CONFLICT


def with_integrity_as_400(save) -> None:
    """A write that a database constraint refuses (two requests racing for one name) is a 400."""
    try:
        with transaction.atomic():
            save()
    except IntegrityError as exc:
        raise serializers.ValidationError({"non_field_errors": [f"Conflicts with a saved object: {exc}"]}) from None


class RouteViewSet(ManagementViewSet, viewsets.ModelViewSet):
    queryset = Route.objects.select_related("quota_plan", "fallback").prefetch_related("targets").order_by("id")
    serializer_class = api.RouteSerializer
    filterset_class = filters.RouteFilter

    def perform_destroy(self, route):
        routes.delete_route(route)


class PlanViewSet(ManagementViewSet, viewsets.ModelViewSet):
    queryset = QuotaPlan.objects.order_by("id")
    serializer_class = api.PlanSerializer
    filterset_class = filters.PlanFilter

    def perform_destroy(self, plan):
        plans.delete_plan(plan)


class PriceViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """The price list. A change never alters the cost of calls already made (stored on their rows)."""

    queryset = ModelPrice.objects.select_related("target").order_by("model", "target_id", "-valid_from", "id")
    serializer_class = api.PriceSerializer
    filterset_class = filters.PriceFilter

    def perform_destroy(self, price):
        spend.delete_price(price)


class TeamViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """Teams of keys with their budgets; a key joins one by its `team` field."""

    queryset = Team.objects.prefetch_related("keys").order_by("id")
    serializer_class = api.TeamSerializer
    filterset_class = filters.TeamFilter

    def perform_destroy(self, team):
        spend.delete_team(team)


class KeyViewSet(ManagementViewSet, viewsets.ModelViewSet):
    """POST issues a key: its secret is in that answer only. rotate gives it a new one."""

    queryset = APIKey.objects.select_related("quota_plan").prefetch_related("routes").order_by("id")
    serializer_class = api.KeySerializer
    filterset_class = filters.KeyFilter

    @extend_schema(responses={201: api.IssuedKeySerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return no_store(Response(api.IssuedKeySerializer(serializer.instance).data, status=status.HTTP_201_CREATED))

    def perform_destroy(self, key):
        key_service.delete_key(key)

    @extend_schema(request=api.RotateSerializer, responses={200: api.IssuedKeySerializer})
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated, ChangePermission])
    def rotate(self, request, pk=None):
        """A new secret for this key (same limits, routes and usage); the old one works for grace_seconds."""
        key = self.get_object()
        options = api.RotateSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        key.secret = key_service.rotate_key(key, timedelta(seconds=options.validated_data["grace_seconds"]))
        return no_store(Response(api.IssuedKeySerializer(key).data))

    @extend_schema(request=None, responses={200: api.KeySerializer})
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated, ChangePermission])
    def revoke(self, request, pk=None):
        """Refuse this key from now on, for good."""
        key = key_service.revoke_key(self.get_object())
        return Response(api.KeySerializer(key).data)

    @extend_schema(responses={200: api.KeyUsageSummarySerializer}, filters=False)
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def usage(self, request, pk=None):
        """Today's and this month's use against the key's limits, and its live counters."""
        key = self.get_object()
        today = timezone.localdate()
        totals = key.usage.aggregate(
            requests_today=Sum("requests", filter=Q(day=today)),
            tokens_today=Sum("total_tokens", filter=Q(day=today)),
            requests_month=Sum("requests", filter=Q(day__gte=today.replace(day=1))),
            tokens_month=Sum("total_tokens", filter=Q(day__gte=today.replace(day=1))),
        )
        limits = key.effective_limits()
        try:
            live = [
                {"name": q.name, "limit": q.limit, "remaining": q.remaining, "reset": q.reset} for q in quota_state(key)
            ]
        except Exception:  # the cache is down: the durable totals still answer
            live = None
        return Response(
            {
                "today": {
                    "requests": totals["requests_today"] or 0,
                    "total_tokens": totals["tokens_today"] or 0,
                    "tokens_limit": limits["tokens_per_day"],
                },
                "this_month": {
                    "requests": totals["requests_month"] or 0,
                    "total_tokens": totals["tokens_month"] or 0,
                    "tokens_limit": limits["tokens_per_month"],
                },
                "live": live,
            }
        )


class RequestLogViewSet(ManagementViewSet, viewsets.ReadOnlyModelViewSet):
    queryset = RequestLog.objects.all()
    serializer_class = api.RequestLogSerializer
    filterset_class = RequestLogFilterSet  # the console's explorer uses the same one
    pagination_class = LogPagination

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "by", str, enum=list(GROUPS), required=True, description="Sum the calls per team, key, route or model."
            )
        ],
        responses={200: api.LogSummarySerializer},
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def summary(self, request):
        """The filtered calls (the log list's filters) summed per group: calls, errors, tokens and
        cost, biggest cost first, as the console's explorer shows them "per team" and exports them."""
        by = request.query_params.getlist("by")
        if len(by) != 1 or by[0] not in GROUPS:
            raise serializers.ValidationError({"by": [f"Give one of: {', '.join(GROUPS)}."]})
        groups = summarize(self.filter_queryset(self.get_queryset()), by[0])
        for group in groups:
            group["value"] = str(group["value"])
            group["name"] = group.get("name")
            group["cost"] = None if group["cost"] is None else str(group["cost"])
        return Response({"by": by[0], "currency": settings.GATEWAY_CURRENCY, "groups": groups})


class BudgetAlertViewSet(ManagementViewSet, viewsets.ReadOnlyModelViewSet):
    """Budget alerts, newest first: one per budget, threshold and period, and how its sending went."""

    queryset = BudgetAlert.objects.all()
    serializer_class = api.BudgetAlertSerializer
    filterset_class = filters.BudgetAlertFilter
    pagination_class = LogPagination


class HistoryPagination(LogPagination):
    ordering = "-timestamp"


class HistoryViewSet(ManagementViewSet, viewsets.ReadOnlyModelViewSet):
    """The change history (django-auditlog), read-only: nobody adds, edits or deletes an entry here."""

    queryset = LogEntry.objects.select_related("content_type", "actor")
    serializer_class = api.HistorySerializer
    filterset_class = filters.HistoryFilter
    pagination_class = HistoryPagination


class UsageViewSet(ManagementViewSet, viewsets.ReadOnlyModelViewSet):
    """Per-key, per-day totals (KeyUsage)."""

    queryset = KeyUsage.objects.order_by("-day", "api_key_id")
    serializer_class = api.UsageSerializer
    filterset_class = filters.UsageFilter


class TokenViewSet(
    ManagementViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
):
    """Your own management tokens. A token acts as you, with your role; DELETE revokes it."""

    serializer_class = api.TokenSerializer
    queryset = ManagementToken.objects.none()  # the model, for the schema; get_queryset gives the user's own
    permission_classes = [IsAuthenticated]  # anyone signed in may hold tokens: they grant no more than the user has
    filter_backends = []

    def get_queryset(self):
        return ManagementToken.objects.filter(user=self.request.user).order_by("-created", "-id")

    @extend_schema(responses={201: api.IssuedTokenSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, secret = ManagementToken.objects.issue(request.user, serializer.validated_data["name"])
        token.token = secret  # in this answer only
        return no_store(Response(api.IssuedTokenSerializer(token).data, status=status.HTTP_201_CREATED))

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "confirm",
                str,
                enum=["self"],
                description="Required to revoke the token this request is authenticated with.",
            )
        ],
        responses={204: None, 409: None},
    )
    def destroy(self, request, *args, **kwargs):
        token = self.get_object()
        if token == request.auth and request.query_params.get("confirm") != "self":
            # A script cleaning up its tokens would otherwise lock itself out by mistake.
            raise SelfRevocation()
        self.perform_destroy(token)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def perform_destroy(self, token):
        tokens.revoke_token(token)
