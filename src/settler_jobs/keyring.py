"""The application keys that seal stored secrets (webhook signing secrets, credentials).

`SETTLER_SECRET_KEY` is the current key and `SETTLER_PREVIOUS_SECRET_KEYS` older ones that
can still open what they sealed. On the embedded defaults (no DATABASE_URL) a key is
created once in the data folder, readable by its owner only; with an external database
the key must be configured, so that every process of a deployment shares it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.secrets_box import SecretBox

KEY_FILE = "secret.key"


def key_id(key: str) -> str:
    """A stable, non-secret name for a key: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def secret_box(settings: Settings) -> SecretBox:
    """The SecretBox for these settings; ConfigError if no key can be had."""
    current = _current_key(settings)
    keys = {key_id(k): k for k in (s.get_secret_value() for s in settings.previous_secret_keys)}
    keys[key_id(current)] = current
    return SecretBox.from_keys(keys, current=key_id(current))


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A 32-byte key for `purpose` (e.g. signing cookies), derived from the application key."""
    current = _current_key(settings).encode()
    return hmac.new(current, f"settler-derived:{purpose}".encode(), hashlib.sha256).digest()


def _current_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if not settings.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            "SETTLER_SECRET_KEY is required with a database server; create one with "
            "`settler-jobs secret-key` and give every process the same value"
        )
    return _embedded_key(settings.data_dir / KEY_FILE)


def _embedded_key(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(SecretBox.generate_key() + "\n")
    return path.read_text().strip()
