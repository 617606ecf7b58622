"""Attachment storage behind a small interface; a directory by default (S3 can implement it)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import Protocol

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_filename(name: str | None, default: str = "attachment") -> str:
    """Keep the base name only: no directories, no control characters, no leading dots."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    return base[:200] or default


def new_key(workspace_id: str, filename: str) -> str:
    return f"inbox-attachments/{workspace_id}/{secrets.token_hex(12)}/{safe_filename(filename)}"


def key_belongs_to(key: str, workspace_id: str) -> bool:
    prefix = f"inbox-attachments/{workspace_id}/"
    return key.startswith(prefix) and ".." not in key.split("/")


class Storage(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def exists(self, key: str) -> bool: ...
    def path(self, key: str) -> Path | None: ...


class DirectoryStorage:
    """Files under a root directory; keys map to relative paths (validated, never escaping)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root):
            raise ValueError("attachment key escapes the storage root")
        return target

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.path(key), data)

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)
