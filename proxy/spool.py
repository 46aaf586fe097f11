"""Log rows that a stopping process could not write, kept on local disk until the database takes them.

A process that stops while the database is away (a graceful stop, a worker recycled after
GATEWAY_MAX_REQUESTS) would lose its queued rows with its memory. It writes them here instead
(`keep`), and any gateway process that starts later, or is running, writes them to the database
once it answers (proxy/recording.py `replay_spool`).

- A file appears whole or not at all: written under a temporary name, synced, then renamed.
- Files live in a subfolder per database (a hash of its engine, host, port and name), so gateways
  sharing the folder but not the database never replay each other's rows.
- A file's rows are written exactly once: its name is saved (routes_admin SpooledLogFile) in the
  transaction that writes its rows, and the file is removed after that commits. Two processes
  replaying the same file, or one that died before the commit or before the removal, write it once.
- The format names its columns and each value is read back through its model field, so a column
  added later (or a decimal, a date, a JSON value) flows through; a column the file lacks gets
  the field's default.
"""

import hashlib
import json
import os
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

FILE_ROWS = 10_000  # rows per file: one replay transaction each
SUFFIX = ".spool"


def json_default(value):
    """json.dumps' `default` for the log's values that JSON lacks (dates, decimals, UUIDs)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"cannot spool a {type(value).__name__}")


def database_folder(database: dict) -> str:
    """The subfolder of one database: the same for every process that writes to it."""
    identity = "|".join(str(database.get(part) or "") for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class Spool:
    """One folder of spool files for one database (`fields`: the log model's concrete fields by name)."""

    def __init__(self, directory, fields: dict):
        self.directory = Path(directory)
        self.fields = fields

    def keep(self, rows: list[dict]) -> list[Path]:
        """Write rows to new spool files, atomically; returns the files."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = []
        for at in range(0, len(rows), FILE_ROWS):
            chunk = rows[at : at + FILE_ROWS]
            columns = list(chunk[0])
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            final = self.directory / f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
            temporary = final.with_name(f".{final.name}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps({"columns": columns}) + "\n")
                for row in chunk:
                    out.write(json.dumps([row[name] for name in columns], default=json_default) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
            made.append(final)
        self._sync_directory()
        return made

    def files(self) -> list[Path]:
        """Spool files waiting, oldest first."""
        try:
            return sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return []

    def read(self, path: Path) -> list[dict] | None:
        """The file's rows as the writer makes them; None when it is gone (replayed meanwhile)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        columns = json.loads(lines[0])["columns"]
        known = [(index, self.fields[name]) for index, name in enumerate(columns) if name in self.fields]
        missing = [field for name, field in self.fields.items() if name not in columns]
        rows = []
        for line in lines[1:]:
            values = json.loads(line)
            row = {field.attname: field.to_python(values[index]) for index, field in known}
            row.update({field.attname: field.get_default() for field in missing})
            rows.append(row)
        return rows

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def _sync_directory(self) -> None:
        """So the renames themselves survive a crash of the host."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
