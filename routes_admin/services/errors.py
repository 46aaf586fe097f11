"""The one exception of the service layer."""

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

ALL = NON_FIELD_ERRORS  # "__all__": about the object as a whole


class ServiceError(Exception):
    """A change refused, with field messages: {field: [message, ...]}.

    A route's targets are under "targets": a list with one dict of the same shape per target,
    in the order they were given (an empty dict for a target with nothing wrong). Messages never
    quote a secret.
    """

    def __init__(self, errors: dict):
        self.errors = errors
        super().__init__("; ".join(self.messages()))

    @classmethod
    def of(cls, exc: ValidationError) -> "ServiceError":
        """A model's ValidationError, as field messages."""
        return cls(exc.message_dict if hasattr(exc, "error_dict") else {ALL: exc.messages})

    def messages(self) -> list[str]:
        """Every message as one line, prefixed by its field (and target position)."""
        lines = []
        for name, value in self.errors.items():
            if name == "targets" and isinstance(value, list):
                for position, target in enumerate(value):
                    lines += [f"targets[{position}].{line}" for line in ServiceError(target).messages()]
                continue
            for message in value if isinstance(value, list) else [value]:
                lines.append(message if name == ALL else f"{name}: {message}")
        return lines


def checked(instance, exclude=()) -> None:
    """The model's own rules (fields, clean(), unique values), as a ServiceError."""
    try:
        instance.full_clean(exclude=list(exclude))
    except ValidationError as exc:
        raise ServiceError.of(exc) from None
