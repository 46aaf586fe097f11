from django.apps import AppConfig


class RoutesAdminConfig(AppConfig):
    name = "routes_admin"
    verbose_name = "Gateway configuration"

    def ready(self) -> None:
        from . import history, signals  # noqa: F401  (signals: config changes bump the shared generation)

        history.register_models()
