"""Filesystem helpers: hashing and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.errors import OutputError


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically, creating the parent folder: a reader sees the old file or the new one,
    never half of one, and a failed write leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (``write_text``)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def creation_mode(path: Path, folder: bool) -> int:
    """The permission bits a plain create would give ``path`` (those of the file or folder it replaces,
    else the umask's), for files staged by ``tempfile``, which are private to the user (0600 / 0700): a
    deployment job or web server reading the artifacts under another account must not lose access."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def check_new_file(path: str | Path, force: bool, flag: str) -> None:
    """Refuse a file output that is a folder, or that exists unless ``force``. Called before any work, so
    a refused path costs nothing and a measurement is never lost to it."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} '{path}' is a folder", f"give {flag} a file path")
    if path.exists() and not force:
        raise OutputError(f"{flag} '{path}' already exists",
                          f"choose another {flag} path or pass --force to replace it")


def check_new_output(path: Path, force: bool) -> None:
    """Refuse to clobber a user's non-empty folder or any file unless ``force``."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output '{path}' exists and is a file", "choose another --out path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputError(f"output folder '{path}' exists and is not empty",
                          "choose another --out or pass --force to replace it")


@contextmanager
def atomic_dir(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside ``path``; on success it replaces ``path`` whole.

    On any error the staging folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_new_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        staging.chmod(creation_mode(path, folder=True))
        yield staging
        check_new_output(path, force)  # something may have appeared while we worked
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
