"""python manage.py export_config [FILE]"""

from pathlib import Path

from django.core.management.base import BaseCommand

from routes_admin import config_file


class Command(BaseCommand):
    help = (
        "Write routes, their targets and quota plans as YAML (to FILE, or standard output). "
        "Credentials are written as ${ENV:NAME} references, never their values."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="Where to write; standard output if left out.")

    def handle(self, *args, **options):
        text, variables = config_file.export()
        if options["file"]:
            Path(options["file"]).write_text(text)
            self.stdout.write(f"Wrote {options['file']}.")
        else:
            self.stdout.write(text, ending="")
        if variables:
            # On stderr, so that `export_config > gateway.yaml` keeps the file clean.
            self.stderr.write("Credentials are read from these environment variables when the file is applied:")
            for variable in variables:
                self.stderr.write(f"  {variable}")
