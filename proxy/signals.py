"""Any change to routes, targets, keys or plans reaches every gateway process once it commits.

The data layer (routes_admin) sends Django's model signals and knows nothing of the proxy; these
handlers, connected by ProxyConfig.ready(), announce the change through the ConfigGeneration row
(proxy/config.py) after the transaction commits, never inside it: a process reloading in between
would otherwise read the old rows and keep them under the new generation.
"""

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from routes_admin.models import APIKey, ModelPrice, QuotaPlan, Route, Team, UpstreamTarget

from . import config

WATCHED = (Route, UpstreamTarget, APIKey, QuotaPlan, ModelPrice, Team)


def _changed(using: str | None) -> None:
    # This process's copy is dropped at once, so code running in this transaction sees its own
    # change; a reload in between only finds the old generation and reloads again after the bump.
    config.invalidate()
    transaction.on_commit(config.announce_change, using=using)


@receiver(post_save)
@receiver(post_delete)
def config_changed(sender, using=None, **kwargs) -> None:
    if sender in WATCHED:
        _changed(using)


@receiver(m2m_changed, sender=APIKey.routes.through)
def key_routes_changed(sender, using=None, **kwargs) -> None:
    _changed(using)
