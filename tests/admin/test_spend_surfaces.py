"""Prices, teams and budgets through every surface: the management API, the configuration file,
the admin and import_prices all write through the service layer, refuse the same things with the
same message, and leave each change in the history."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from routes_admin.models import APIKey, ModelPrice, Route, Team
from routes_admin.services import spend
from tests.admin_forms import form_values
from tests.factories import make_key, make_route, make_target
from tests.roles import bearer, token_for

pytestmark = pytest.mark.django_db


def send(method: str, path: str, token: str, body=None):
    kwargs = bearer(token)
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(Client(), method)(path, **kwargs)


def history_of(obj) -> list[int]:
    return list(LogEntry.objects.get_for_object(obj).values_list("action", flat=True))


# --- The management API ---------------------------------------------------------------------------


def test_an_operator_manages_prices_through_the_api_with_history():
    token = token_for("operator")
    created = send(
        "post", "/api/prices/", token, {"model": "m", "input_per_million": "0.15", "output_per_million": "0.6"}
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["input_per_million"] == "0.150000" and body["currency"] == "USD"
    price = ModelPrice.objects.get(id=body["id"])
    changed = send("patch", f"/api/prices/{price.id}/", token, {"per_call": "0.001"})
    assert changed.status_code == 200, changed.content
    assert ModelPrice.objects.get(id=price.id).per_call == Decimal("0.001")
    assert send("delete", f"/api/prices/{price.id}/", token).status_code == 204
    assert history_of(price) == [LogEntry.Action.DELETE, LogEntry.Action.UPDATE, LogEntry.Action.CREATE]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("input_per_million", "-1", "negative"),
        ("input_per_million", "0.0000001", "decimal places"),
        ("input_per_million", 0.15, "decimal string"),
    ],
)
def test_the_api_refuses_a_bad_price_and_saves_nothing(field, value, message):
    body = {"model": "m", "input_per_million": "1", "output_per_million": "1", field: value}
    answer = send("post", "/api/prices/", token_for("operator"), body)
    assert answer.status_code == 400
    assert message in json.dumps(answer.json())
    assert not ModelPrice.objects.exists()


def test_an_auditor_reads_prices_and_teams_but_changes_none():
    token = token_for("auditor")
    assert send("get", "/api/prices/", token).status_code == 200
    assert send("get", "/api/teams/", token).status_code == 200
    assert send("post", "/api/teams/", token, {"name": "t"}).status_code == 403


def test_teams_and_key_budgets_through_the_api():
    token = token_for("operator")
    answer = send("post", "/api/teams/", token, {"name": "acme", "budget_per_day": "5.50"})
    assert answer.status_code == 201, answer.content
    team_id = answer.json()["id"]
    refused = send("post", "/api/teams/", token, {"name": "zero", "budget_per_day": "0"})
    assert refused.status_code == 400 and "refuse every call" in json.dumps(refused.json())

    key, _ = make_key(name="k", all_routes=True)
    joined = send("patch", f"/api/keys/{key.id}/", token, {"team": team_id, "budget_per_month": "100"})
    assert joined.status_code == 200, joined.content
    assert joined.json()["team"] == team_id and joined.json()["budget_per_month"] == "100.000000"
    key.refresh_from_db()
    assert key.team_id == team_id and key.budget_per_month == Decimal(100)
    assert send("get", f"/api/keys/?team={team_id}", token).json()["count"] == 1
    assert send("get", f"/api/teams/{team_id}/", token).json()["keys"] == [key.id]
    assert send("patch", f"/api/keys/{key.id}/", token, {"budget_per_day": "-1"}).status_code == 400

    assert send("delete", f"/api/teams/{team_id}/", token).status_code == 204
    key.refresh_from_db()
    assert key.team is None  # the key stays, without a team
    team_history = LogEntry.objects.filter(content_type__model="team", object_pk=str(team_id))
    assert sorted(team_history.values_list("action", flat=True)) == [LogEntry.Action.CREATE, LogEntry.Action.DELETE]


def test_a_route_budget_and_default_max_tokens_through_the_api():
    route = make_route(name="chat")
    make_target(route, "http://127.0.0.1:9/v1")
    token = token_for("operator")
    answer = send("patch", f"/api/routes/{route.id}/", token, {"budget_per_day": "20", "default_max_tokens": 512})
    assert answer.status_code == 200, answer.content
    route.refresh_from_db()
    assert (route.budget_per_day, route.default_max_tokens) == (Decimal(20), 512)


# --- The admin ------------------------------------------------------------------------------------


def test_the_admin_saves_route_budgets():
    """The route form's Spend fields are saved through the service layer."""
    route = make_route(name="chat")
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get(f"/admin/routes_admin/route/{route.id}/change/").content.decode()
    data = form_values(page, "route_form")
    data["budget_per_day"] = "7.5"
    saved = client.post(f"/admin/routes_admin/route/{route.id}/change/", data)
    assert saved.status_code == 302
    route.refresh_from_db()
    assert route.budget_per_day == Decimal("7.5")


def test_the_admin_refuses_a_zero_team_budget_with_the_service_message():
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.post("/admin/routes_admin/team/add/", {"name": "t", "budget_per_day": "0", "budget_per_month": ""})
    assert page.status_code == 200
    assert "refuse every call" in page.content.decode()
    assert not Team.objects.exists()
    client.post("/admin/routes_admin/team/add/", {"name": "t", "budget_per_day": "3", "budget_per_month": ""})
    team = Team.objects.get()
    assert team.budget_per_day == 3 and history_of(team) == [LogEntry.Action.CREATE]


# --- The configuration file -----------------------------------------------------------------------


def export() -> str:
    out = StringIO()
    call_command("export_config", stdout=out, stderr=StringIO())
    return out.getvalue()


def apply(tmp_path, text: str, *args) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def priced():
    route = make_route(name="chat", budget_per_month=Decimal("300"))
    target = make_target(route, "http://127.0.0.1:9/v1", name="openai")
    spend.save_team("acme", budget_per_day="5.5")
    spend.save_price(None, {"model": "m", "input_per_million": Decimal("0.15"), "output_per_million": Decimal("0.6")})
    spend.save_price(
        None, {"model": "m", "target": target, "input_per_million": Decimal("1"), "output_per_million": Decimal("2")}
    )
    return route


def test_prices_and_teams_round_trip_through_the_file(priced, tmp_path):
    text = export()
    assert "teams:" in text and "prices:" in text and "target: chat/openai" in text
    assert "input_per_million: '0.150000'" in text  # an amount is written as a string, never a float
    assert "budget_per_month: '300.000000'" in text
    assert "No changes" in apply(tmp_path, text) or "Nothing" in apply(tmp_path, text)

    ModelPrice.objects.all().delete()
    Team.objects.all().delete()
    Route.objects.filter(name="chat").update(budget_per_month=None)
    apply(tmp_path, text, "--yes")
    assert Team.objects.get(name="acme").budget_per_day == Decimal("5.5")
    assert ModelPrice.objects.count() == 2
    assert ModelPrice.objects.get(target__name="openai").output_per_million == 2
    assert Route.objects.get(name="chat").budget_per_month == 300


def test_a_yaml_float_price_is_read_as_its_text(tmp_path):
    apply(tmp_path, "version: 1\nprices:\n- {model: m, input_per_million: 0.1, output_per_million: 0.3}\n", "--yes")
    price = ModelPrice.objects.get()
    assert (price.input_per_million, price.output_per_million) == (Decimal("0.1"), Decimal("0.3"))
    assert history_of(price) == [LogEntry.Action.CREATE]


def test_a_bad_price_or_team_in_the_file_names_its_line_and_changes_nothing(priced, tmp_path):
    text = export() + ""
    bad = text.replace("budget_per_day: '5.500000'", "budget_per_day: '0'")
    with pytest.raises(CommandError, match=r"line \d+: team acme: .*refuse every call"):
        apply(tmp_path, bad, "--yes")
    bad = text.replace("input_per_million: '0.150000'", "input_per_million: '-0.15'")
    with pytest.raises(CommandError, match="negative"):
        apply(tmp_path, bad, "--yes")
    assert Team.objects.get().budget_per_day == Decimal("5.5")
    assert ModelPrice.objects.filter(input_per_million=Decimal("0.15")).exists()


def test_a_team_missing_from_a_file_with_teams_is_deleted_and_its_keys_stay(priced, tmp_path):
    key, _ = make_key(name="k", all_routes=True)
    spend.join_team(key, Team.objects.get())
    text = export().replace("teams:\n- name: acme\n  budget_per_day: '5.500000'\n", "teams: []\n")
    shown = apply(tmp_path, text)
    assert "- delete team acme" in shown and "1 key(s) leave this team" in shown
    apply(tmp_path, text, "--yes")
    assert not Team.objects.exists() and APIKey.objects.get(id=key.id).team is None
    # A file without a teams list leaves teams alone.
    spend.save_team("beta")
    apply(tmp_path, "version: 1\nroutes: []\n", "--yes")
    assert Team.objects.filter(name="beta").exists()


# --- import_prices --------------------------------------------------------------------------------


def test_import_prices_saves_through_the_service_layer_with_history(tmp_path):
    sheet = tmp_path / "prices.csv"
    sheet.write_text("model,input_per_million,output_per_million\nm,0.15,0.60\n")
    call_command("import_prices", str(sheet), "--yes", stdout=StringIO())
    price = ModelPrice.objects.get()
    entry = LogEntry.objects.get_for_object(price).get()
    assert entry.action == LogEntry.Action.CREATE


# --- Team limits and alert thresholds -------------------------------------------------------------


def test_team_limits_and_alert_thresholds_through_the_api():
    token = token_for("operator")
    answer = send(
        "post",
        "/api/teams/",
        token,
        {"name": "acme", "requests_per_minute": 100, "tokens_per_day": 50000, "alert_thresholds": "50,90"},
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert (body["requests_per_minute"], body["tokens_per_day"], body["alert_thresholds"]) == (100, 50000, "50,90")
    bad = send("patch", f"/api/teams/{body['id']}/", token, {"alert_thresholds": "50,120"})
    assert bad.status_code == 400 and "from 1 to 100" in json.dumps(bad.json())
    key, _ = make_key(name="k", all_routes=True)
    refused = send("patch", f"/api/keys/{key.id}/", token, {"alert_thresholds": "eighty"})
    assert refused.status_code == 400 and "'eighty' is not one" in json.dumps(refused.json())
    assert send("patch", f"/api/keys/{key.id}/", token, {"alert_thresholds": "none"}).status_code == 200
    team = Team.objects.get(id=body["id"])
    assert team.alert_thresholds == "50,90" and history_of(team) == [LogEntry.Action.CREATE]


@override_settings(GATEWAY_WEBHOOK_HOSTS=["hooks.example.com"])
def test_alert_destinations_of_a_team_and_a_key_are_checked_through_the_api_and_the_file(tmp_path):
    """A team's or key's own alert webhook is held to the job webhooks' rules and allow-list, and
    its emails must be addresses, when saved (not found out when a budget is spent)."""
    token = token_for("operator")
    made = send(
        "post",
        "/api/teams/",
        token,
        {"name": "acme", "alert_webhook": "https://hooks.example.com/acme", "alert_emails": "lead@acme.example"},
    )
    assert made.status_code == 201, made.content
    team_url = f"/api/teams/{made.json()['id']}/"
    off_list = send("patch", team_url, token, {"alert_webhook": "http://10.0.0.7/hook"})
    assert off_list.status_code == 400 and "allow-list" in json.dumps(off_list.json())
    odd = send("patch", team_url, token, {"alert_webhook": "https://user@hooks.example.com/"})
    assert odd.status_code == 400 and "user name or password" in json.dumps(odd.json())
    key, _ = make_key(name="k", all_routes=True)
    bad_mail = send("patch", f"/api/keys/{key.id}/", token, {"alert_emails": "lead@acme.example, nobody"})
    assert bad_mail.status_code == 400 and "'nobody' is not one" in json.dumps(bad_mail.json())
    team = Team.objects.get(name="acme")
    assert (team.alert_webhook, team.alert_emails) == ("https://hooks.example.com/acme", "lead@acme.example")
    text = export()
    assert "alert_webhook: https://hooks.example.com/acme" in text
    with pytest.raises(CommandError, match="allow-list"):
        apply(tmp_path, text.replace("https://hooks.example.com/acme", "https://evil.example/acme"), "--yes")
    assert Team.objects.get(name="acme").alert_webhook == "https://hooks.example.com/acme"


def test_team_limits_round_trip_through_the_file(tmp_path):
    spend.save_team("acme", requests_per_day=500, max_concurrent=4, alert_thresholds="80")
    text = export()
    assert "requests_per_day: 500" in text and "alert_thresholds: '80'" in text
    Team.objects.all().delete()
    apply(tmp_path, text, "--yes")
    team = Team.objects.get(name="acme")
    assert (team.requests_per_day, team.max_concurrent, team.alert_thresholds) == (500, 4, "80")
    changed = apply(tmp_path, text.replace("requests_per_day: 500", "requests_per_day: 600"))
    assert "update team acme" in changed and "requests_per_day: 500 -> 600" in changed
    with pytest.raises(CommandError, match="team acme"):
        apply(tmp_path, text.replace("alert_thresholds: '80'", "alert_thresholds: 'often'"), "--yes")


def test_the_admin_saves_team_limits():
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get("/admin/routes_admin/team/add/").content.decode()
    data = form_values(page, "team_form")
    data.update(name="ops", tokens_per_month="1000000", alert_thresholds="75")
    assert client.post("/admin/routes_admin/team/add/", data).status_code == 302
    team = Team.objects.get(name="ops")
    assert (team.tokens_per_month, team.alert_thresholds) == (1000000, "75")
