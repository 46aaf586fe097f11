"""A call explained in plain words from its recorded `detail` (no database)."""

from console.explain import explain
from routes_admin.models import RequestLog


def row(**fields) -> RequestLog:
    values = dict(status=200, latency_ms=812.0, key_prefix="abcd1234", route_name="chat", model="", detail={})
    values.update(fields)
    return RequestLog(**values)


def test_a_timeout_then_an_answer_reads_as_one_sentence():
    attempts = [
        {"target": "demo-a", "status": None, "error": "timeout", "ms": 5000.0, "next": "timeout"},
        {"target": "demo-b", "status": 200, "error": "", "ms": 812.0, "next": ""},
    ]
    explained = explain(row(detail={"match": "route chat: prefix /v1", "attempts": attempts}))
    assert explained.outcome.startswith("demo-a timed out after 5.0 s, retried on demo-b, answered 200 in 812 ms")
    assert (
        "Target demo-a",
        "timed out after 5.0 s; a failed connection is retried on the next target",
    ) in explained.steps
    assert ("Route", "matched route chat: prefix /v1") in explained.steps


def test_a_refusal_by_a_limit_names_the_counter_and_its_reset():
    quota = {"name": "requests_per_minute", "limit": 60, "used": 60, "reset": 14}
    explained = explain(
        row(status=429, error_type="rate_limit_exceeded", limit="requests_per_minute", detail={"quota": quota})
    )
    assert explained.outcome == "refused: requests_per_minute 60/60 (counting this call), resets in 14 s"
    assert ("Limits", "refused by requests_per_minute 60/60 (counting this call), resets in 14 s") in explained.steps


def test_a_refusal_by_a_budget_reads_its_amounts_as_people_write_them():
    quota = {
        "name": "team_budget_per_day",
        "budget": "0.050000",
        "spent": "0.019800000000",
        "reserved_by_others": "0.907200000000",
        "currency": "USD",
        "reset": 1523,
    }
    explained = explain(
        row(status=429, error_type="budget_exceeded", limit="team_budget_per_day", detail={"quota": quota})
    )
    assert explained.outcome == (
        "refused: team_budget_per_day 0.0198 of 0.05 USD spent + 0.9072 reserved by calls in flight, resets in 1523 s"
    )


def test_each_refused_key_reason_in_words():
    for reason, words in [
        ("missing", "no API key was sent"),
        ("unknown", "the API key is not known"),
        ("revoked", "the API key was revoked"),
        ("disabled", "the API key is disabled"),
        ("expired", "the API key has expired"),
        ("route_not_allowed", "the API key may not call this route"),
    ]:
        status = 403 if reason == "route_not_allowed" else 401
        explained = explain(row(status=status, error_type="invalid_api_key", detail={"auth": reason}))
        assert explained.outcome == f"refused with {status}: {words}"
        assert explained.steps[0] == ("Key", f"refused: {words}")


def test_no_route_says_why():
    why = "No route serves the model 'slow' on this path."
    explained = explain(row(status=404, error_type="not_found", route_name="", model="slow", detail={"why": why}))
    assert explained.outcome == f"refused with 404: {why[:-1]}"  # the page adds the one period
    assert ("Route", f"none: {why}") in explained.steps


def test_a_retry_status_an_open_breaker_and_a_fallback():
    attempts = [
        {"target": "dead", "skipped": "breaker_open"},
        {"target": "busy", "status": 503, "error": "", "ms": 3.0, "next": "fallback"},
        {"target": "spare-1", "status": 200, "error": "", "ms": 20.0, "next": ""},
    ]
    explained = explain(row(route_name="spare", fallback_from="chat", detail={"attempts": attempts}))
    assert explained.outcome == (
        "dead skipped: its circuit breaker was open, busy answered 503 in 3 ms, "
        "fell back to spare-1 (route spare), answered 200 in 20 ms; the whole call took 812 ms"
    )
    assert (
        "Target busy",
        "answered 503 in 3 ms; every target of chat failed: the fallback route took the call",
    ) in explained.steps


def test_every_attempt_failed_names_the_gateway_error():
    attempts = [{"target": "a", "status": None, "error": "unreachable", "ms": 1.0, "next": ""}]
    why = "The upstream could not be reached."
    explained = explain(row(status=502, error_type="upstream_unavailable", detail={"attempts": attempts, "why": why}))
    assert explained.outcome == f"a could not be reached (1 ms): failed with 502, {why[:-1]}"


def test_an_aliased_model_and_a_model_match_are_told():
    detail = {
        "match": "route chat: prefix /v1, model",
        "attempts": [{"target": "t", "status": 200, "error": "", "ms": 5.0, "next": ""}],
    }
    explained = explain(row(model="fast", upstream_model="llama-3.1-8b", detail=detail))
    assert ("Route", "matched route chat: prefix /v1, model fast") in explained.steps
    assert ("Model", "fast was sent upstream as llama-3.1-8b (the target's alias)") in explained.steps
    assert explained.outcome == "t answered 200 in 5 ms"


def test_a_row_from_before_details_were_recorded_still_reads():
    explained = explain(row(detail={}, latency_ms=12.0))
    assert explained.outcome == "answered 200 in 12 ms"
    assert (
        explain(row(status=0, latency_ms=1500.0)).outcome == "the client went away after 1.5 s, before the answer ended"
    )
