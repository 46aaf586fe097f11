"""What every configuration-changing command shares."""

from django.core.management.base import BaseCommand

from routes_admin.history import recorded_as_command


class RecordedCommand(BaseCommand):
    """A command whose changes the change history attributes to `manage.py <its name>`."""

    def execute(self, *args, **options):
        with recorded_as_command(self.__module__.rsplit(".", 1)[-1]):
            return super().execute(*args, **options)
