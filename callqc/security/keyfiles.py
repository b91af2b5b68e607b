"""Reading and writing secret files (keys) with owner-only permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, created (or truncated) with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def read_private(path: Path, require_owner_only: bool = True) -> bytes:
    """Read a secret file; refuse one that group or others can read (mount Secrets with mode 0400)."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if require_owner_only and mode & 0o077:
        raise PermissionError(f"{path} is readable by group/others (mode {mode:o}); use 0600 or 0400")
    return path.read_bytes()
