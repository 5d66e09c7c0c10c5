"""Blobs of Shoal-served containers, kept as plain files under one directory (``<state>/containers``).

Writes go to a temporary file first and are renamed into place, so a reader (or a crash) never sees half a blob.
Names are checked by :mod:`shoal.domain.containers` before they reach this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    modified: float


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def container_dir(self, container: str) -> Path:
        return self.root / container

    def path(self, container: str, parts: Iterable[str]) -> Path:
        return self.container_dir(container).joinpath(*parts)

    def create_container(self, container: str) -> bool:
        """Create a container; False when it already existed."""
        target = self.container_dir(container)
        if target.is_dir():
            return False
        target.mkdir(parents=True, exist_ok=True)
        return True

    def delete_container(self, container: str) -> bool:
        target = self.container_dir(container)
        if not target.is_dir():
            return False
        shutil.rmtree(target)
        return True

    def put(self, container: str, parts: list[str], data: BinaryIO | Iterator[bytes]) -> BlobInfo:
        target = self.path(container, parts)
        if target.is_dir():
            raise IsADirectoryError(f"'{'/'.join(parts)}' is a virtual directory of other blobs")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            # A blob is readable by every user of a node its container is mounted in (mountConfiguration), as
            # files a task writes there are; the state directory (0700) keeps the host's other users out.
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as out:
                if hasattr(data, "read"):  # a file (files iterate by lines: copy them in blocks instead)
                    shutil.copyfileobj(cast(BinaryIO, data), out, 1 << 20)
                else:
                    for chunk in data:
                        out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.info(container, parts)

    def put_file(self, container: str, parts: list[str], source: Path) -> BlobInfo:
        with open(source, "rb") as f:
            return self.put(container, parts, f)

    def info(self, container: str, parts: list[str]) -> BlobInfo:
        st = self.path(container, parts).stat()
        return BlobInfo("/".join(parts), st.st_size, st.st_mtime)

    def find(self, container: str, parts: list[str]) -> Path | None:
        target = self.path(container, parts)
        return target if target.is_file() and not target.name.startswith(".upload-") else None

    def delete(self, container: str, parts: list[str]) -> bool:
        target = self.find(container, parts)
        if target is None:
            return False
        target.unlink()
        return True

    def list(self, container: str, prefix: str = "") -> list[BlobInfo]:
        root = self.container_dir(container)
        out = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(".upload-"):
                    continue
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                if rel.startswith(prefix):
                    st = full.stat()
                    out.append(BlobInfo(rel, st.st_size, st.st_mtime))
        return sorted(out, key=lambda b: b.name)
