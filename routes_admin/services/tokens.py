"""Management API tokens: revoke them (issued by `create_token` and the API's POST /api/tokens/)."""

from django.db import transaction
from django.utils import timezone

from ..models import ManagementToken


@transaction.atomic
def revoke_token(token: ManagementToken) -> ManagementToken:
    """Refuse the token from now on, for good; saved with .save() so the change history records it."""
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])
    return token
