"""The admin for spending: the price list and teams (budgets sit on keys, teams and routes)."""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.widgets import AdminBigIntegerFieldWidget
from django.db import models

from .admin_history import HistoryLinkMixin
from .models import Budgets, ModelPrice, Team
from .services import spend


@admin.register(ModelPrice)
class ModelPriceAdmin(HistoryLinkMixin, admin.ModelAdmin):
    list_display = ["model", "target", "input_per_million", "output_per_million", "per_call", "valid_from", "currency"]
    list_filter = ["model"]
    search_fields = ["model", "target__name", "target__route__name"]
    list_select_related = ["target__route"]
    raw_id_fields = ["target"]
    readonly_fields = ["created"]
    fieldsets = [
        (
            None,
            {
                "fields": ["model", "target", "input_per_million", "output_per_million", "per_call", "valid_from"],
                "description": "Amounts in the gateway's currency (GATEWAY_CURRENCY), at most 6 decimal places. "
                "A call is charged the price in force when it started; a change never alters calls already made.",
            },
        ),
    ]

    @admin.display(description="Currency")
    def currency(self, obj):
        return settings.GATEWAY_CURRENCY

    def save_model(self, request, obj, form, change):
        spend.save_price(
            obj, {name: form.cleaned_data[name] for name in spend.PRICE_FIELDS if name in form.cleaned_data}
        )

    def delete_model(self, request, obj):
        spend.delete_price(obj)

    def delete_queryset(self, request, queryset):
        for price in queryset:
            spend.delete_price(price)


WIDE_NUMBERS = {models.PositiveIntegerField: {"widget": AdminBigIntegerFieldWidget}}


@admin.register(Team)
class TeamAdmin(HistoryLinkMixin, admin.ModelAdmin):
    list_display = ["name", "budget_per_day", "budget_per_month", "created"]
    search_fields = ["name"]
    readonly_fields = ["created"]
    formfield_overrides = WIDE_NUMBERS
    fieldsets = [
        (None, {"fields": ["name", "created"]}),
        (
            "Limits",
            {
                "fields": list(Team.LIMIT_FIELDS),
                "description": "Counted once for all the team's keys together (each key's own limits still "
                "apply). Empty: no limit.",
            },
        ),
        (
            "Budgets",
            {
                "fields": list(Budgets.SPEND_FIELDS),
                "description": "In the gateway's currency, per calendar day and month; they hold across all the "
                "team's keys together. Empty: no budget.",
            },
        ),
    ]

    def save_model(self, request, obj, form, change):
        spend.save_team(
            team=obj, **{name: form.cleaned_data[name] for name in spend.TEAM_FIELDS if name in form.cleaned_data}
        )

    def delete_model(self, request, obj):
        spend.delete_team(obj)

    def delete_queryset(self, request, queryset):
        for team in queryset:
            spend.delete_team(team)
