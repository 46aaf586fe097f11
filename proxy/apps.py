from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Proxy"

    def ready(self) -> None:
        from . import live, runtime, signals  # noqa: F401  (configuration changes are announced after they commit)

        runtime.install(live.Runtime)  # what each process builds its live state with (proxy/runtime.py)
