from django.apps import AppConfig


class RoutesAdminConfig(AppConfig):
    name = "routes_admin"
    verbose_name = "Gateway configuration"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (config changes bump the shared generation)
