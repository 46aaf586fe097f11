"""/healthz answers while the process lives; /readyz only when the database and the cache answer."""

import pytest
import requests


@pytest.mark.django_db
def test_healthz_needs_nothing_but_the_process(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_cache(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "config": "ok", "request_log": "ok"},
    }


@pytest.mark.django_db
def test_readyz_is_unavailable_when_the_cache_is_unreachable(client, settings):
    settings.CACHES = {  # the settings fixture resets Django's cache handler
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "cache": "unreachable", "config": "ok", "request_log": "ok"},
    }


def test_readyz_is_unavailable_when_the_database_is_unreachable(client, cluster):
    gateway = cluster.start(DATABASE_URL="postgres://nobody@127.0.0.1:1/none", DATABASE_POOL_TIMEOUT="0.5")
    response = requests.get(f"{gateway.url}/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"
    assert response.json()["checks"]["config"] == "unavailable"  # never loaded one: nothing to serve
    assert requests.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
