"""DRF's settings serve the management API and the console as in any Django project; the proxy
view keeps what it needs on its own class."""

import pytest
from django.contrib.auth.models import User
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView


class Echo(APIView):
    """A plain DRF view with nothing set, as a management API view starts."""

    def get(self, request):
        return Response({"user": request.user.username})

    def post(self, request):
        return Response(request.data)


def test_a_plain_drf_view_refuses_anonymous_callers():
    response = Echo.as_view()(APIRequestFactory().get("/api/echo"))
    assert response.status_code == 403


@pytest.mark.django_db
def test_a_plain_drf_view_parses_json_for_a_signed_in_user():
    request = APIRequestFactory().post("/api/echo", {"name": "a route"}, format="json")
    force_authenticate(request, user=User.objects.create_user("ops"))
    response = Echo.as_view()(request)
    assert (response.status_code, response.data) == (200, {"name": "a route"})
