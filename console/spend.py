"""What the console shows of spending: teams (their keys, spend today and this month against each
budget, their limits), budget alerts, and who is near a budget.

Spend is read from the usage rollups (routes_admin/spending.py: a few aggregate queries, never a
scan of the request log); the live counters (budgets reserved by calls in flight, the team's
limits as they are counted now) through proxy/state.py, the back office's one door to the proxy.
A page must not fail with the cache: without it, the live parts say they are unknown.
"""

from django.db.models import Count, Q
from django.urls import reverse

from proxy import state
from routes_admin import durations, spending
from routes_admin.models import APIKey, BudgetAlert, Budgets, Route, Team

MAX_OWNERS = 200  # keys or teams with a budget looked at for "near a budget"
TEAM_ALERTS = 20


def with_budget() -> Q:
    found = Q()
    for name in Budgets.BUDGET_FIELDS:
        found |= Q(**{f"{name}__isnull": False})
    return found


def live_budgets(kind: str, owner) -> list[dict] | None:
    """The budgets' live counters (spent, reserved by calls in flight, reset); None when the cache is down."""
    try:
        found = state.budget_state(kind, owner)
    except Exception:
        return None
    for line in found:
        line["resets_in"] = durations.in_words(line["reset"])
    return found


def live_limits(team) -> list[dict] | None:
    try:
        quotas = state.team_quota_state(team)
    except Exception:
        return None
    return [
        {
            "name": quota.name,
            "limit": quota.limit,
            "used": quota.limit - max(0, quota.remaining),
            "resets_in": durations.in_words(quota.reset) if quota.window else "",
        }
        for quota in quotas
    ]


def teams_overview() -> list[dict]:
    """Every team with its keys' count, its spend today and this month against its budgets."""
    teams = list(Team.objects.annotate(key_count=Count("keys")).order_by("name"))
    starts = spending.period_starts()
    names = [team.name for team in teams]
    spent = {period: spending.spent_by("team", names, start) for period, start in starts.items()}
    alerts = dict(
        BudgetAlert.objects.filter(scope="team", period_start__gte=starts["month"].date())
        .order_by()
        .values("owner_id")
        .annotate(n=Count("id"))
        .values_list("owner_id", "n")
    )
    found = []
    for team in teams:
        spend = {period: spent[period][team.name] for period in spent}
        found.append(
            {
                "team": team,
                "spend": spend,
                "budgets": {line["name"]: line for line in spending.against_budgets(team, spend)},
                "limits": [
                    (name, getattr(team, name)) for name in Team.LIMIT_FIELDS if getattr(team, name) is not None
                ],
                "alerts": alerts.get(team.id, 0),
            }
        )
    return found


def team_page(team: Team) -> dict:
    """The team's page: spend against each budget, its limits, its keys' spend, its alerts."""
    spend = spending.owner_spend("team", team)
    keys = list(team.keys.order_by("name"))
    starts = spending.period_starts()
    values = [spending.rollup_value("key", key) for key in keys]
    by_key = {period: spending.spent_by("key", values, start) for period, start in starts.items()}
    key_rows = [
        {
            "key": key,
            "today": by_key["today"][value],
            "month": by_key["month"][value],
            "budgets": spending.against_budgets(
                key, {"today": by_key["today"][value], "month": by_key["month"][value]}
            ),
        }
        for key, value in zip(keys, values, strict=True)
    ]
    return {
        "team": team,
        "spend": spend,
        "budgets": spending.against_budgets(team, spend),
        "live": live_budgets("team", team),
        "limits": [(name, getattr(team, name)) for name in Team.LIMIT_FIELDS if getattr(team, name) is not None],
        "live_limits": live_limits(team),
        "keys": key_rows,
        "alerts": with_links(list(BudgetAlert.objects.filter(scope="team", owner_id=team.id)[:TEAM_ALERTS])),
        "alert_count": BudgetAlert.objects.filter(scope="team", owner_id=team.id).count(),
    }


def near_a_budget() -> list[dict]:
    """Keys and teams at 80 % or more of a budget today or this month (from the rollups), fullest first."""
    keys = APIKey.objects.usable().filter(with_budget()).order_by("id")[:MAX_OWNERS]
    teams = Team.objects.filter(with_budget()).order_by("id")[:MAX_OWNERS]
    found = spending.near_budgets("key", keys) + spending.near_budgets("team", teams)
    for line in found:
        owner = line["owner"]
        if line["kind"] == "key":
            line["link"] = reverse("admin:routes_admin_apikey_change", args=[owner.pk])
        else:
            line["link"] = reverse("console:team", args=[owner.pk])
    return sorted(found, key=lambda line: -line["percent"])


def with_links(alerts: list[BudgetAlert]) -> list[BudgetAlert]:
    """Each alert's `link`: where its key (the admin), team (the console) or route (the admin) is
    shown, or "" once it is deleted. One query per kind of owner."""
    pages = {
        "key": (APIKey, lambda pk: reverse("admin:routes_admin_apikey_change", args=[pk])),
        "team": (Team, lambda pk: reverse("console:team", args=[pk])),
        "route": (Route, lambda pk: reverse("admin:routes_admin_route_change", args=[pk])),
    }
    for scope, (model, page) in pages.items():
        ids = {alert.owner_id for alert in alerts if alert.scope == scope}
        present = set(model.objects.filter(id__in=ids).values_list("id", flat=True)) if ids else set()
        for alert in alerts:
            if alert.scope == scope:
                alert.link = page(alert.owner_id) if alert.owner_id in present else ""
    return alerts
