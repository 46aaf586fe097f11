from django.apps import AppConfig


class GatewayProjectConfig(AppConfig):
    """The wiring layer as an app, so that its start-up checks of the settings are registered."""

    name = "gateway_project"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the settings checks: gateway_project/checks.py)
