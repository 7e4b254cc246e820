"""Object storage for generated files: a local folder (default) or an S3-compatible bucket.

Keys look like ``exports/<tenant>/<export-id>.csv``: segments of ``[A-Za-z0-9._-]``,
no ``.``/``..`` segment, no leading ``/`` (`validate_key`). Writes are atomic: a reader
sees the previous object or the finished new one, never a partial file.

* local: a temporary file in the destination folder, fsync, rename over the key, fsync
  the folder. A crash leaves at most a ``.tmp-*`` file, never the key.
* S3: the file is spooled locally, then uploaded (boto3 uses a multipart upload above
  8 MiB); S3 publishes an object only when its upload completes. An upload cut by a
  killed process leaves an incomplete multipart upload, invisible to readers; a bucket
  lifecycle rule (AbortIncompleteMultipartUpload) reclaims its parts.

`remove_stale_temp` deletes what killed writers left (the export handler calls it with
an hour's margin, far above the export timeout). Methods block: call them from a thread
(`asyncio.to_thread`) in async code.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError, NotFound

MAX_KEY_LENGTH: Final = 512
READ_CHUNK: Final = 256 * 1024
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TMP_PREFIX: Final = ".tmp-"


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key; ValueError otherwise."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"object key must be 1-{MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise ValueError(f"invalid object key {key!r}: bad segment {segment!r}")
        if segment.startswith(_TMP_PREFIX):
            raise ValueError(f"invalid object key {key!r}: {_TMP_PREFIX}* names are reserved")
    return key


class Readable(Protocol):
    """A binary stream being read (a local file or an S3 response body)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """Where generated files live."""

    def open_write(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A binary file to fill; published at `key` on a clean exit, discarded on error."""
        ...

    def open_read(self, key: str) -> Readable:
        """The object's bytes as a stream (NotFound if absent); close it when done."""
        ...

    def exists(self, key: str) -> bool:
        """True if `key` holds a finished object."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object (no error if absent)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file on this machine, if the store is a local folder."""
        ...

    def remove_stale_temp(self, older_than_s: float) -> int:
        """Delete temporary files left by killed writers; returns how many went."""
        ...


def iter_chunks(stream: Readable, size: int = READ_CHUNK) -> Iterator[bytes]:
    """Read `stream` in chunks of at most `size` bytes, closing it at the end."""
    try:
        while chunk := stream.read(size):
            yield chunk
    finally:
        stream.close()


class LocalStore:
    """Objects as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"invalid object key {key!r}: leaves the storage folder")
        return path

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def open_read(self, key: str) -> Readable:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no stored object {key!r}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def remove_stale_temp(self, older_than_s: float) -> int:
        return _remove_stale(self.root, older_than_s)


def _remove_stale(root: Path, older_than_s: float) -> int:
    cutoff = time.time() - older_than_s
    removed = 0
    for path in root.rglob(_TMP_PREFIX + "*") if root.is_dir() else ():
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class S3Store:
    """Objects in an S3-compatible bucket; files are spooled under `spool_dir` first."""

    def __init__(self, client: Any, bucket: str, spool_dir: Path) -> None:
        self._client = client
        self.bucket = bucket
        self._spool = spool_dir

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        validate_key(key)
        self._spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=_TMP_PREFIX, dir=self._spool) as spool:
            yield spool
            spool.flush()
            # Nothing reaches the bucket unless the body above finished without error.
            self._client.upload_file(spool.name, self.bucket, key)

    def open_read(self, key: str) -> Readable:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except self._client.exceptions.NoSuchKey:
            raise NotFound(f"no stored object {key!r}") from None
        body: Readable = response["Body"]
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def remove_stale_temp(self, older_than_s: float) -> int:
        return _remove_stale(self._spool, older_than_s)


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client from the SETTLER_S3_* settings."""
    import boto3
    from botocore.config import Config

    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def object_store(settings: Settings) -> ObjectStore:
    """S3 when SETTLER_S3_BUCKET is set, else the local files folder."""
    if settings.s3_bucket:
        if not settings.s3_endpoint_url and not settings.s3_region:
            raise ConfigError(
                "SETTLER_S3_BUCKET needs SETTLER_S3_REGION or SETTLER_S3_ENDPOINT_URL"
            )
        return S3Store(s3_client(settings), settings.s3_bucket, settings.data_dir / "spool")
    return LocalStore(settings.files_dir)
