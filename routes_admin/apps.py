from django.apps import AppConfig


class RoutesAdminConfig(AppConfig):
    name = "routes_admin"
    verbose_name = "Gateway configuration"

    def ready(self) -> None:
        from . import history

        history.register_models()  # the change history records every change of these models
