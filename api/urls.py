"""/api/: the management API, its OpenAPI schema and its interactive documentation."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import docs, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("routes", views.RouteViewSet, basename="route")
router.register("plans", views.PlanViewSet, basename="plan")
router.register("keys", views.KeyViewSet, basename="key")
router.register("prices", views.PriceViewSet, basename="price")
router.register("teams", views.TeamViewSet, basename="team")
router.register("logs", views.RequestLogViewSet, basename="log")
router.register("alerts", views.BudgetAlertViewSet, basename="alert")
router.register("usage", views.UsageViewSet, basename="usage")
router.register("history", views.HistoryViewSet, basename="history")
router.register("tokens", views.TokenViewSet, basename="token")

urlpatterns = [
    *router.urls,
    path("schema/", docs.SchemaView.as_view(), name="api-schema"),
    path("docs/", docs.DocsView.as_view(url_name="api-schema"), name="api-docs"),
]
