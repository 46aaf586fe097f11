"""Plain factory helpers: make_route(**overrides), make_key(**overrides)."""

import time

from django_ratelimit import core as ratelimit

from routes_admin.models import APIKey, QuotaPlan, Route, UpstreamTarget

MINUTE_LEFT = 15  # seconds a test's calls against a per-minute limit may take, with room to spare


def make_route(upstream_url: str | None = None, **overrides) -> Route:
    fields = {"name": f"route-{Route.objects.count() + 1}", "path_prefix": "/v1", "methods": "GET,POST"}
    fields.update(overrides)
    route = Route.objects.create(**fields)
    if upstream_url:
        make_target(route, upstream_url)
    return route


def make_target(route: Route, url: str, **overrides) -> UpstreamTarget:
    return UpstreamTarget.objects.create(route=route, url=url, **overrides)


def make_key(routes=(), **overrides) -> tuple[APIKey, str]:
    """A key and its secret; by default allowed on the given routes.

    A key limited per minute (by itself or its plan) has MINUTE_LEFT seconds left in its window, so
    the test's calls and its reading of the counter fall in one window: another key is made if not."""
    while True:
        key, secret = APIKey.objects.issue(**{"name": f"key-{APIKey.objects.count() + 1}"} | overrides)
        if key.effective_limits()["requests_per_minute"] is None or window_left(f"k{key.id}") >= MINUTE_LEFT:
            break
        key.delete()
    key.routes.set(routes)
    return key, secret


def window_left(counter: str, seconds: int = 60) -> float:
    """Seconds until a request counter's current window ends. django-ratelimit's windows are fixed
    and each counter ("k12", "k12:r3", "t4") has its own offset in the minute."""
    return ratelimit._get_window(counter, seconds) - time.time()


def make_plan(**limits) -> QuotaPlan:
    return QuotaPlan.objects.create(name=limits.pop("name", f"plan-{QuotaPlan.objects.count() + 1}"), **limits)


def auth(secret: str) -> dict:
    """Django test client kwargs for a Bearer key."""
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def make_user(username: str, role: str | None = None, password: str = "password", **fields):
    """A staff user (may open the admin) in the given role group: Admin, Operator or Auditor."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username, password=password, is_staff=True, **fields)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user
