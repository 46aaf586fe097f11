"""Console pages: thin views over figures.py, filters.py, explain.py and export.py. Read-only."""

from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from routes_admin import filtersets
from routes_admin.models import APIKey, RequestLog, Route

from . import charts, export, figures, filters, history, live
from .access import console_page
from .explain import explain

RANGES = filters.RANGES
STEP_UNITS = {"minute": "calls / minute", "hour": "calls / hour", "day": "calls / day"}


def _dashboard_range(request):
    """(start, end, chosen preset or "custom", the custom form)."""
    form = filters.RangeForm(request.GET or None)
    now = timezone.now()
    if request.GET.get("range") == "custom" and form.is_valid():
        return form.cleaned_data["start"], min(form.cleaned_data["end"], now), "custom", form
    chosen = request.GET.get("range") if request.GET.get("range") in RANGES else "24h"
    return now - RANGES[chosen], now, chosen, form


@console_page
def dashboard(request):
    start, end, chosen, form = _dashboard_range(request)
    shown = figures.compute(start, end)
    _label(shown)
    context = {
        "figures": shown,
        "range": chosen,
        "ranges": RANGES,
        "form": form,
        "start": start,
        "end": end,
        "calls_chart": charts.calls_chart(shown.series, shown.step, STEP_UNITS[shown.period]),
        "latency_chart": charts.latency_chart(shown.latency_series, [m for m, _ in shown.series], shown.step),
        "near_limits": live.keys_near_a_limit(),
        "breakers": live.breakers_not_closed(),
        "any_call": shown.calls > 0 or RequestLog.objects.exists(),
    }
    return render(request, "console/dashboard.html", context)


def _label(shown) -> None:
    """Each ranked item's label (a key's name, not only its prefix) and its explorer link. A key is
    linked by its id, so its calls before and after a rotation are one list."""
    ids = {item["key_id"] for item in shown.by_key + shown.top_keys if item["key_id"]}
    names = dict(APIKey.objects.filter(id__in=ids).values_list("id", "name"))
    for item in shown.by_key + shown.top_keys:
        key_id, prefix = item["key_id"], item["name"]
        if key_id:
            item["label"] = names.get(key_id, f"deleted key #{key_id}")
            item["link"] = urlencode({"api_key": key_id})
        else:
            item["label"] = f"gw_{prefix}_…" if prefix else "no key"
            item["link"] = urlencode({"key_prefix": prefix}) if prefix else ""
    for items, param, nobody in ((shown.by_route, "route_name", "no route"), (shown.by_model, "model", "no model")):
        for item in items:
            value = item["name"]
            item["label"] = value or nobody
            item["link"] = urlencode({param: value}) if value else ""


@console_page
def calls(request):
    found = filters.explorer_filters(request.GET)
    cursor = request.GET.get("cursor", "")
    after = filters.decode_cursor(cursor) if cursor else None
    rows, next_cursor = [], ""
    if found.is_valid():
        rows, next_cursor = filters.page(found.qs, after)
    active = filters.active(found)
    context = {
        "form": found.form,
        "fields": filters.shown_fields(found),
        "rows": rows,
        "active": active,
        "presets": filters.presets(active),
        "query": urlencode(active),
        "next_query": urlencode({**active, "cursor": next_cursor}) if next_cursor else "",
        "paged": bool(after),
        "broken_cursor": bool(cursor) and after is None,
        "admin_link": _admin_link(active),
        "limit_names": filtersets.LIMIT_NAMES,
        "routes": Route.objects.order_by("name").values_list("name", flat=True),
        "any_call": bool(rows) or RequestLog.objects.exists(),
    }
    return render(request, "console/calls.html", context, status=200 if found.is_valid() else 400)


def _admin_link(active: dict) -> tuple[str, str] | None:
    """Back to the admin page of the key or route the explorer is filtered on."""
    if active.get("route_name"):
        route = Route.objects.filter(name=active["route_name"]).first()
        if route:
            return reverse("admin:routes_admin_route_change", args=[route.pk]), f"route {route.name} in the admin"
    typed = str(active.get("api_key", "")).strip()
    if typed.isdigit() and len(typed) < 19:  # as typed (the page also shows invalid filters): an id the database holds
        ids = list(APIKey.objects.filter(pk=int(active["api_key"])).values_list("pk", flat=True)[:1])
        if ids:
            return reverse("admin:routes_admin_apikey_change", args=ids), "this key in the admin"
    if active.get("key"):
        ids = filtersets.key_ids(active["key"])
        if len(ids) == 1:
            return reverse("admin:routes_admin_apikey_change", args=ids), "this key in the admin"
    return None


@console_page
def call(request, pk: int):
    row = get_object_or_404(RequestLog.objects.select_related("api_key", "route"), pk=pk)
    context = {"row": row, "explanation": explain(row), "back": request.GET.get("back", "")}
    context.update(job_rows(row))
    return render(request, "console/call.html", context)


def job_rows(row) -> dict:
    """A job's submission (202) and its runs share the request id: each call page links the other.
    The submission's row names its job in detail["job"]; a run's row has job_id."""
    job_id = str(row.job_id) if row.job_id else (row.detail or {}).get("job", "")
    if not job_id:
        return {}
    same = RequestLog.objects.filter(request_id=row.request_id).exclude(pk=row.pk).order_by("created")
    if row.job_id:
        return {"job_id": job_id, "submission": same.filter(job_id__isnull=True, status=202).first()}
    return {"job_id": job_id, "runs": list(same.filter(job_id=job_id)[:20])}


@console_page
def export_calls(request, fmt: str):
    if fmt not in export.FORMATS:
        raise Http404("unknown export format")
    found = filters.explorer_filters(request.GET)
    if not found.is_valid():
        context = {"form": found.form, "fields": filters.shown_fields(found), "rows": [], "any_call": True}
        return render(request, "console/calls.html", context, status=400)
    history.record_export(request, fmt, found)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return export.response(found.qs, fmt, f"calls-{stamp}")
