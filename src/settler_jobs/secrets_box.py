"""Encryption at rest for webhook signing secrets (and, later, adapter credentials).

A `SecretBox` seals short strings with AES-256-GCM. Each token reads

    v1.<key id>.<urlsafe base64 of 96-bit nonce + ciphertext + 128-bit tag>

The nonce is random per encryption (safe for far more than 2**32 secrets per key would
ever need). The associated data binds the format version, the key id and a caller's
*context* (for example ``"webhook-endpoint:<id>"``), so a token copied into another row
fails to decrypt. Key rotation: build the box with every key still in use and name the
current one; tokens of any listed key decrypt, new tokens use the current key.

Errors are `SecretError`; their messages never contain plaintext, tokens or keys, and
neither does `repr(box)`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from settler_jobs.errors import SettlerError

VERSION: Final = "v1"
DEFAULT_KEY_ID: Final = "k1"
WEBHOOK_SECRET_PREFIX: Final = "whsec_"
WEBHOOK_SECRET_MIN_BYTES: Final = 24
WEBHOOK_SECRET_MAX_BYTES: Final = 64

_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_KEY_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_APP_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]{43}=?$")
_PAYLOAD_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_MASK_MIN_CHARS: Final = 16


class SecretError(SettlerError):
    """A secret could not be encrypted or decrypted."""


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_key(key: str) -> bytes:
    """Strictly decode an application key (urlsafe base64 of 32 bytes, padding optional)."""
    if not isinstance(key, str) or not _APP_KEY_RE.fullmatch(key):
        raise SecretError("an application key must be urlsafe base64 of 32 bytes")
    return _b64url_decode(key.rstrip("="))


def _aad(key_id: str, context: str) -> bytes:
    # Key ids cannot contain NUL and the context comes last, so the framing is unambiguous.
    return f"settler-secret-box\x00{VERSION}\x00{key_id}\x00{context}".encode()


def _check_context(context: str) -> None:
    if not isinstance(context, str) or not context:
        raise SecretError("a non-empty context string is required")


class SecretBox:
    """Seals and opens secrets with AES-256-GCM; see the module docstring for the format."""

    __slots__ = ("_aeads", "_current")

    def __init__(self, keys: Mapping[str, bytes], *, current: str) -> None:
        """Build from raw 32-byte keys by id; prefer `from_key` / `from_keys`."""
        if current not in keys:
            raise SecretError(f"the current key id {current!r} is not among the keys")
        aeads: dict[str, AESGCM] = {}
        for key_id, raw in keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise SecretError("key ids must be 1-32 of [A-Za-z0-9_-]")
            if len(raw) != _KEY_BYTES:
                raise SecretError(f"key {key_id!r} must be {_KEY_BYTES} bytes")
            aeads[key_id] = AESGCM(raw)
        self._aeads = aeads
        self._current = current

    @classmethod
    def from_key(cls, key: str, *, key_id: str = DEFAULT_KEY_ID) -> SecretBox:
        """A box with one application key (urlsafe base64 of 32 bytes) named `key_id`."""
        return cls({key_id: _parse_key(key)}, current=key_id)

    @classmethod
    def from_keys(cls, keys: Mapping[str, str], *, current: str) -> SecretBox:
        """A box that opens tokens of every listed key and seals with `current`."""
        if not keys:
            raise SecretError("at least one key is required")
        return cls({key_id: _parse_key(key) for key_id, key in keys.items()}, current=current)

    @staticmethod
    def generate_key() -> str:
        """A fresh random application key, urlsafe base64 of 32 bytes (unpadded)."""
        return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode().rstrip("=")

    @property
    def current_key_id(self) -> str:
        """The id of the key new tokens are sealed with."""
        return self._current

    def key_id_of(self, token: str) -> str:
        """The key id a token was sealed with (to find rows that still need re-sealing)."""
        return self._split(token)[0]

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Seal `plaintext` for the row named by `context`; returns a printable token."""
        _check_context(context)
        if not isinstance(plaintext, str):
            raise SecretError("only strings can be sealed")
        try:
            data = plaintext.encode()
        except UnicodeEncodeError:
            raise SecretError("the secret is not valid Unicode text") from None
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(nonce, data, _aad(self._current, context))
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{self._current}.{payload}"

    def decrypt(self, token: str, *, context: str) -> str:
        """Open a token sealed by `encrypt` with the same `context` and any listed key.

        Raises SecretError if the token is malformed, names an unknown key, was sealed
        for another context or key, or was altered.
        """
        _check_context(context)
        key_id, blob = self._split(token)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise SecretError(f"the secret was sealed with key id {key_id!r}, not configured")
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        try:
            data = aead.decrypt(nonce, sealed, _aad(key_id, context))
            return data.decode()
        except (InvalidTag, UnicodeDecodeError):
            raise SecretError(
                "the secret cannot be decrypted: wrong key or context, or it was altered"
            ) from None

    @staticmethod
    def _split(token: str) -> tuple[str, bytes]:
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != VERSION:
            raise SecretError(f"not a sealed secret (expected a {VERSION}. token)")
        key_id, payload = parts[1], parts[2]
        if not _KEY_ID_RE.fullmatch(key_id) or not _PAYLOAD_RE.fullmatch(payload):
            raise SecretError("the sealed secret is malformed")
        try:
            blob = _b64url_decode(payload)
        except (binascii.Error, ValueError):
            raise SecretError("the sealed secret is malformed") from None
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise SecretError("the sealed secret is truncated")
        return key_id, blob

    def __repr__(self) -> str:
        return f"SecretBox(key_ids={sorted(self._aeads)!r}, current={self._current!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("SecretBox holds keys and cannot be pickled")


def new_webhook_secret(nbytes: int = 32) -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of `nbytes` (24-64) random bytes."""
    if (
        isinstance(nbytes, bool)
        or not isinstance(nbytes, int)
        or not WEBHOOK_SECRET_MIN_BYTES <= nbytes <= WEBHOOK_SECRET_MAX_BYTES
    ):
        raise ValueError(
            f"nbytes must be an integer from {WEBHOOK_SECRET_MIN_BYTES} "
            f"to {WEBHOOK_SECRET_MAX_BYTES}"
        )
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(os.urandom(nbytes)).decode()


def mask(secret: str) -> str:
    """A display form showing only the last 4 characters, e.g. ``whsec_…abcd``.

    Secrets shorter than 16 characters (after the prefix) show no characters at all.
    """
    prefix = WEBHOOK_SECRET_PREFIX if secret.startswith(WEBHOOK_SECRET_PREFIX) else ""
    body = secret[len(prefix) :]
    tail = body[-4:] if len(body) >= _MASK_MIN_CHARS else ""
    return f"{prefix}…{tail}"
