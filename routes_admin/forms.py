"""Admin forms: stored credentials are write-only; the rules and checks are the service layer's
(routes_admin/services), whose ServiceError becomes the forms' own errors here."""

from django import forms
from django.forms.models import BaseInlineFormSet

from .models import APIKey, UpstreamTarget
from .services import ServiceError
from .services import keys as key_service
from .services import routes as route_service
from .services.errors import ALL


def add_service_errors(form, errors: dict) -> None:
    """A ServiceError's field messages on the form: on the field when the form has it."""
    for name, messages in errors.items():
        form.add_error(name if name in form.fields and name != ALL else None, messages)


class UpstreamTargetForm(forms.ModelForm):
    credential_value = forms.CharField(
        required=False,
        strip=False,  # what is typed is what is checked and sent
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored value (dropped when the URL's scheme, host or port "
        "changes). Tick 'clear credential' to remove it.",
    )
    clear_credential = forms.BooleanField(required=False, label="Clear credential")

    class Meta:
        model = UpstreamTarget
        fields = [*route_service.TARGET_FIELDS, "clear_credential"]

    def given(self) -> dict:
        """The fields as the service layer takes them: a credential only when typed ("" when
        cleared), and the stored target's id."""
        given = {name: self.cleaned_data[name] for name in route_service.TARGET_FIELDS if name in self.cleaned_data}
        if self.cleaned_data.get("clear_credential"):
            given["credential_header"] = given["credential_value"] = ""
        elif not given.get("credential_value"):
            del given["credential_value"]  # left empty: not given
        if self.instance.pk:
            given["id"] = self.instance.pk
        return given

    def _post_clean(self):
        # The target is checked as it will be saved, stored values and rules included, by the
        # service layer (TargetFormSet.clean), not as this form alone would build it.
        pass


class TargetFormSet(BaseInlineFormSet):
    """A route's targets, checked and saved as one list by the service layer."""

    def kept_forms(self) -> list:
        return [
            form
            for form in self.forms
            if form.is_bound
            and (form.instance.pk or form.has_changed())
            and not (self.can_delete and self._should_delete_form(form))
        ]

    def given(self) -> list[dict]:
        return [form.given() for form in self.kept_forms()]

    def clean(self):
        super().clean()
        forms_ = self.kept_forms()
        if any(form.errors for form in forms_):
            return
        try:
            route_service.check_targets(self.instance, self.given())
        except ServiceError as exc:
            for form, errors in zip(forms_, exc.errors.get("targets", []), strict=False):
                add_service_errors(form, errors)

    def record(self, saved: route_service.SavedRoute) -> None:
        """What the admin's change message reads (as formset.save() would leave it)."""
        forms_ = self.kept_forms()
        self.new_objects = [t for form, t in zip(forms_, saved.targets, strict=True) if not form.instance.pk]
        self.changed_objects = [
            (t, form.changed_data) for form, t in zip(forms_, saved.targets, strict=True) if form.instance.pk
        ]
        self.changed_objects = [(t, changed) for t, changed in self.changed_objects if changed]
        self.deleted_objects = saved.deleted


class APIKeyForm(forms.ModelForm):
    """A key's reach is always explicit (the service layer's rule): some routes, or all routes."""

    class Meta:
        model = APIKey
        fields = ["all_routes", "routes"]  # the admin adds the rest from its fieldsets

    def fields_given(self) -> dict:
        return {name: value for name, value in self.cleaned_data.items() if name != "routes"}

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            key = APIKey.objects.get(pk=self.instance.pk) if self.instance.pk else None
            try:
                key_service.check_key(key, self.fields_given(), cleaned.get("routes", []))
            except ServiceError as exc:
                add_service_errors(self, exc.errors)
        return cleaned
