"""A minimal DRF endpoint under /api/ for tests/admin/test_history.py: it authenticates inside the view."""

from django.urls import path
from rest_framework.authentication import BasicAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_project.urls import urlpatterns as gateway_urlpatterns
from routes_admin.models import Route


class RoutePriority(APIView):
    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    def post(self, request, pk):
        route = Route.objects.get(pk=pk)
        route.priority = request.data["priority"]
        route.save()
        return Response({"priority": route.priority})


urlpatterns = [path("api/test-routes/<int:pk>/priority", RoutePriority.as_view()), *gateway_urlpatterns]
