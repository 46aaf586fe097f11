"""Admin forms: stored credentials are write-only."""

from django import forms

from .models import APIKey, UpstreamTarget


class UpstreamTargetForm(forms.ModelForm):
    credential_value = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored value. Tick 'clear credential' to remove it.",
    )
    clear_credential = forms.BooleanField(required=False, label="Clear credential")

    class Meta:
        model = UpstreamTarget
        fields = [
            "name",
            "url",
            "weight",
            "position",
            "enabled",
            "credential_header",
            "credential_value",
            "clear_credential",
            "model_aliases",
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("clear_credential"):
            cleaned["credential_value"] = ""
            cleaned["credential_header"] = ""
        elif not cleaned.get("credential_value") and self.instance.pk:
            cleaned["credential_value"] = self.instance.credential_value  # unchanged
        self.instance.credential_value = cleaned.get("credential_value", "")
        return cleaned


class APIKeyForm(forms.ModelForm):
    """A key's reach is always explicit, as `manage.py issue_key` requires: some routes, or all routes."""

    class Meta:
        model = APIKey
        fields = ["all_routes", "routes"]  # the admin adds the rest from its fieldsets

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("all_routes") and not cleaned.get("routes"):
            raise forms.ValidationError(
                "Choose the routes this key may call, or tick “All routes”: a key that may call nothing is of no use.",
                code="no_reach",
            )
        return cleaned
