"""Writes wheels newer than anything the locks pin into a folder, to stand in for a package index
that moved on since the locks were made: `python .ci/newer_wheels.py DIR`.

cachecontrol is the package that broke the install once (pip-audit asks for
`CacheControl[filecache]`, and the pip that Python 3.11's venv brings resolved that to the newest
release in the index, outside the lock). The wheel is built here, not downloaded, so the check
does not depend on what the index holds on the day either."""

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

NAME, VERSION = "cachecontrol", "99.0.0"


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(folder: Path) -> Path:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}/__init__.py": b"raise ImportError('a release newer than the lock was installed')\n",
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: CacheControl\nVersion: {VERSION}\n"
            "Provides-Extra: filecache\nRequires-Dist: filelock>=3.8.0; extra == 'filecache'\n"
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: newer_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    wheel = folder / f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    print(write_wheel(folder))
