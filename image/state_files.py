"""The files and directories the entrypoint writes: writable directories (the spool, the state dir,
the auth ini's dir, a HOME of last resort), files readable by this user only (0600), and values
kept across starts in embedded mode (the Flask secret key, the generated admin password)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from env_settings import Fatal


def writable_dir(path: Path, what: str, mode: int = 0o700) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise Fatal(f"{what} {path} is not a writable directory ({e.strerror or e})") from None
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file readable by this user only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_or_create(path: Path, make) -> tuple[str, bool]:
    if path.exists():
        return path.read_text().strip(), False
    value = make()
    write_private(path, value + "\n")
    return value, True


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
