from django.apps import AppConfig


class RoutesAdminConfig(AppConfig):
    name = "routes_admin"
    verbose_name = "Gateway configuration"
