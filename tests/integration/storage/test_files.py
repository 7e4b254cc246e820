"""Object storage: local folder and a real S3-compatible server (moto in server mode).

Atomic writes: an exception or a SIGKILL in the middle of a write leaves no visible
object; a second write replaces the first whole.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.errors import NotFound
from settler_jobs.storage.files import (
    LocalStore,
    ObjectStore,
    S3Store,
    iter_chunks,
    object_store,
    validate_key,
)
from tests.s3_server import CREDENTIALS, REGION, new_bucket, s3_server

KEY = "exports/acme/exp_0123.csv"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "files")
    client, bucket = new_bucket(request.getfixturevalue("s3_endpoint"))
    return S3Store(client, bucket, tmp_path / "spool")


def _read(objects: ObjectStore, key: str) -> bytes:
    return b"".join(iter_chunks(objects.open_read(key), size=7))


def test_write_then_read_back_in_chunks(objects: ObjectStore) -> None:
    with objects.open_write(KEY) as out:
        out.write(b"id,name\r\n")
        out.write(b"1,x\r\n" * 100)
    assert objects.exists(KEY)
    assert _read(objects, KEY) == b"id,name\r\n" + b"1,x\r\n" * 100


def test_an_exception_mid_write_leaves_nothing(objects: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), objects.open_write(KEY) as out:
        out.write(b"half a file")
        raise RuntimeError("disk on fire")
    assert not objects.exists(KEY)
    with pytest.raises(NotFound):
        objects.open_read(KEY)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no temp file left


def test_a_failed_rewrite_keeps_the_previous_object(objects: ObjectStore) -> None:
    with objects.open_write(KEY) as out:
        out.write(b"first")
    with pytest.raises(RuntimeError), objects.open_write(KEY) as out:
        out.write(b"second, interrupted")
        raise RuntimeError("cut")
    assert _read(objects, KEY) == b"first"
    with objects.open_write(KEY) as out:
        out.write(b"third")
    assert _read(objects, KEY) == b"third"
    objects.delete(KEY)
    assert not objects.exists(KEY)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "exports/../../x",
        "/abs/path",
        "exports//x",
        "exports/./x",
        "exports\\x",
        "exports/a b",
        "exports/.tmp-123",
        "",
        "x" * 600,
    ],
)
def test_unsafe_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        LocalStore(tmp_path).open_read(key)


def test_settings_choose_the_backend(s3_endpoint: str, tmp_path: Path) -> None:
    local = object_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "files").resolve()
    _, bucket = new_bucket(s3_endpoint)
    remote = object_store(
        Settings(
            data_dir=tmp_path,
            s3_bucket=bucket,
            s3_endpoint_url=s3_endpoint,
            s3_region=REGION,
            s3_access_key_id=CREDENTIALS["aws_access_key_id"],
            s3_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        )
    )
    with remote.open_write(KEY) as out:
        out.write(b"through settings")
    assert _read(remote, KEY) == b"through settings"


_KILLED_WRITER = """
import sys
from pathlib import Path
from settler_jobs.storage.files import LocalStore, S3Store
from tests.s3_server import CREDENTIALS, REGION
import boto3

kind, root, endpoint, bucket = sys.argv[1:5]
if kind == "local":
    store = LocalStore(Path(root))
else:
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)
    store = S3Store(client, bucket, Path(root) / "spool")
with store.open_write("exports/acme/exp_killed.csv") as out:
    out.write(b"x" * (1 << 20))
    out.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # held here until killed
"""


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_writer_killed_mid_write_leaves_no_visible_object(
    kind: str, tmp_path: Path, s3_endpoint: str
) -> None:
    client: Any = None
    bucket = ""
    if kind == "s3":
        client, bucket = new_bucket(s3_endpoint)
    root = tmp_path / "files"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_KILLED_WRITER),
            kind,
            str(root),
            s3_endpoint,
            bucket,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"writing\n"
        proc.kill()
    finally:
        proc.wait(timeout=30)
    key = "exports/acme/exp_killed.csv"
    store: ObjectStore = (
        LocalStore(root) if kind == "local" else S3Store(client, bucket, root / "spool")
    )
    assert not store.exists(key)
    spool = root if kind == "local" else root / "spool"
    leftovers = [p for p in spool.rglob("*") if p.is_file()]
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert store.remove_stale_temp(3600) == 0  # too recent: may be a live writer's
    assert store.remove_stale_temp(-1) == len(leftovers)
    assert not [p for p in spool.rglob("*") if p.is_file()]
