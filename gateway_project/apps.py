from django.apps import AppConfig


class GatewayProjectConfig(AppConfig):
    """The wiring layer as an app, so that its start-up checks of the settings are registered."""

    name = "gateway_project"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from . import cache, checks  # noqa: F401  (checks: registers the settings checks, gateway_project/checks.py)

        cache.share_between_threads()  # one cache object per process, not one per greenlet
