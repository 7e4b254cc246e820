"""The file outbox (embedded default): each email becomes one ``.eml`` file.

Files are written atomically (a temporary file in the same folder, fsync, rename), so a
reader never sees half a message. The name is the send's ledger digest: a retry of a
send that reached the outbox finds its file and does not write a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path
from typing import Final

from settler_jobs.emails.message import OutgoingEmail
from settler_jobs.emails.sender import EmailSender, ProviderError
from settler_jobs.errors import NotFound

_NAME_RE: Final = re.compile(r"^[0-9a-f]{8,64}\.eml$")
_HEADER_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One file of the outbox, as listings show it."""

    name: str
    subject: str
    to: str
    date: str
    size: int
    modified: datetime


class OutboxProvider:
    """Writes emails into `folder` as ``<digest>.eml``."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[EmailSender]:
        yield self

    async def send(self, email: OutgoingEmail) -> str:
        name = f"{email.idempotency_key}.eml"
        try:
            await asyncio.to_thread(_write_once, self.folder, name, email.to_mime().as_bytes())
        except OSError as exc:
            raise ProviderError(f"outbox write failed: {exc}", permanent=False) from exc
        return name


def _write_once(folder: Path, name: str, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists():
        return
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def list_outbox(folder: Path, *, limit: int = 50) -> list[OutboxEntry]:
    """The newest `limit` emails in the outbox, newest first (temporary files skipped)."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if _NAME_RE.fullmatch(p.name) and p.is_file()]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    return [_entry(p) for p in files[:limit]]


def _entry(path: Path) -> OutboxEntry:
    stat = path.stat()
    with path.open("rb") as file:
        headers = BytesHeaderParser(policy=default).parsebytes(file.read(_HEADER_BYTES))
    return OutboxEntry(
        name=path.name,
        subject=str(headers.get("Subject", "")),
        to=str(headers.get("To", "")),
        date=str(headers.get("Date", "")),
        size=stat.st_size,
        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
    )


def read_outbox(folder: Path, name: str) -> str:
    """The full text of one outbox email; NotFound for names that are not outbox files."""
    if not _NAME_RE.fullmatch(name) or not (folder / name).is_file():
        raise NotFound(f"no email {name!r} in the outbox")
    return (folder / name).read_bytes().decode("utf-8", errors="replace")
