"""Any change to routes, targets, keys or plans tells every gateway process to reload its copy."""

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from proxy import config

from .models import APIKey, QuotaPlan, Route, UpstreamTarget

WATCHED = (Route, UpstreamTarget, APIKey, QuotaPlan)


@receiver(post_save)
@receiver(post_delete)
def config_changed(sender, **kwargs) -> None:
    if sender in WATCHED:
        config.invalidate()


@receiver(m2m_changed, sender=APIKey.routes.through)
def key_routes_changed(sender, **kwargs) -> None:
    config.invalidate()
