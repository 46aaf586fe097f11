"""Targets saved with `user:password@` in their URL, before such URLs were refused: the user and
password move into the credential header (Authorization: Basic ...), and a name that was made
from the URL (and so showed the password) becomes host[:port]. Nothing changes for other targets.

A target that already has a credential header keeps it; its URL still loses the user and password.
"""

import base64
from urllib.parse import unquote, urlsplit, urlunsplit

from django.db import migrations

from routes_admin.validators import host_and_port


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def move_credentials(apps, schema_editor):
    UpstreamTarget = apps.get_model("routes_admin", "UpstreamTarget")
    for target in UpstreamTarget.objects.filter(url__contains="@"):
        parts = urlsplit(target.url)
        if parts.username is None and parts.password is None:
            continue  # an @ in the path or query, not in the host part
        if not target.credential_header:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            target.credential_header = "Authorization"
            target.credential_value = "Basic " + base64.b64encode(pair.encode()).decode()
        if target.name == parts.netloc:  # the old default name, with the password in it
            name = host_and_port(target.url) or "target"
            taken = set(UpstreamTarget.objects.filter(route_id=target.route_id).values_list("name", flat=True))
            candidate, n = name, 1
            while candidate in taken:
                n += 1
                candidate = f"{name}-{n}"
            target.name = candidate
        target.url = without_userinfo(target.url)
        target.save(update_fields=["url", "name", "credential_header", "credential_value"])


class Migration(migrations.Migration):
    dependencies = [("routes_admin", "0010_roles_records")]

    operations = [migrations.RunPython(move_credentials, migrations.RunPython.noop)]
