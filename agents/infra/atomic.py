"""The one durability step every atomic write of the project ends with (checkpoints,
encoder exports): after the rename, the folder's own entry is flushed. Imports nothing of the
project, so the export's loader stays free of the training code."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush ``folder``'s entries to disk (a rename into it is then durable); a filesystem
    that cannot fsync a folder is skipped silently (the rename itself stays atomic)."""
    try:
        fd = os.open(Path(folder), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
