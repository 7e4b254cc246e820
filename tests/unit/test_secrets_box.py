"""Secrets at rest: AES-256-GCM tokens bound to their row, key rotation, no leaks."""

from __future__ import annotations

import base64
import pickle

import pytest

from settler_jobs.errors import SettlerError
from settler_jobs.secrets_box import SecretBox, SecretError, mask, new_webhook_secret

CONTEXT = "webhook-endpoint:ep_1"
PLAINTEXT = "whsec_c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw=="


@pytest.fixture
def key() -> str:
    return SecretBox.generate_key()


def _leaks(error: BaseException, *values: str) -> bool:
    return any(value in f"{error} {error!r}" for value in values)


def test_generated_keys_are_32_random_urlsafe_bytes() -> None:
    first, second = SecretBox.generate_key(), SecretBox.generate_key()
    assert first != second
    assert len(base64.urlsafe_b64decode(first + "=")) == 32
    SecretBox.from_key(first + "=")  # padding is optional


def test_round_trip_with_fresh_nonces(key: str) -> None:
    box = SecretBox.from_key(key)
    first = box.encrypt(PLAINTEXT, context=CONTEXT)
    second = box.encrypt(PLAINTEXT, context=CONTEXT)
    assert first != second
    assert first.startswith("v1.k1.")
    assert PLAINTEXT not in first
    assert box.decrypt(first, context=CONTEXT) == PLAINTEXT
    assert box.decrypt(second, context=CONTEXT) == PLAINTEXT
    assert box.decrypt(box.encrypt("", context=CONTEXT), context=CONTEXT) == ""
    assert box.decrypt(box.encrypt("πß✓", context=CONTEXT), context=CONTEXT) == "πß✓"


def test_a_token_cannot_move_to_another_row(key: str) -> None:
    box = SecretBox.from_key(key)
    token = box.encrypt(PLAINTEXT, context=CONTEXT)
    with pytest.raises(SecretError) as caught:
        box.decrypt(token, context="webhook-endpoint:ep_2")
    assert not _leaks(caught.value, PLAINTEXT, key, token)


@pytest.mark.parametrize("position", [6, 20, -1])
def test_altered_tokens_are_rejected(key: str, position: int) -> None:
    box = SecretBox.from_key(key)
    token = box.encrypt(PLAINTEXT, context=CONTEXT)
    flipped = "A" if token[position] != "A" else "B"
    altered = token[:position] + flipped + token[position + 1 :]
    with pytest.raises(SecretError):
        box.decrypt(altered, context=CONTEXT)


@pytest.mark.parametrize(
    "token", ["", "v1", "v2.k1.AAAA", "v1.k1", "v1.k1.!!!", "v1.k 1.AAAA", "v1.k1.AAAA", "x.y.z.w"]
)
def test_malformed_tokens_raise_secret_error(key: str, token: str) -> None:
    with pytest.raises(SecretError):
        SecretBox.from_key(key).decrypt(token, context=CONTEXT)


def test_a_wrong_key_fails_without_leaking(key: str) -> None:
    token = SecretBox.from_key(key).encrypt(PLAINTEXT, context=CONTEXT)
    other = SecretBox.generate_key()
    with pytest.raises(SecretError) as caught:
        SecretBox.from_key(other).decrypt(token, context=CONTEXT)
    assert isinstance(caught.value, SettlerError)
    assert not _leaks(caught.value, PLAINTEXT, key, other)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_rotation_decrypts_old_tokens_and_encrypts_with_the_current_key(key: str) -> None:
    old_token = SecretBox.from_key(key, key_id="k1").encrypt(PLAINTEXT, context=CONTEXT)
    new_key = SecretBox.generate_key()
    box = SecretBox.from_keys({"k1": key, "k2": new_key}, current="k2")
    assert box.current_key_id == "k2"
    assert box.decrypt(old_token, context=CONTEXT) == PLAINTEXT
    new_token = box.encrypt(PLAINTEXT, context=CONTEXT)
    assert box.key_id_of(new_token) == "k2" and box.key_id_of(old_token) == "k1"
    assert SecretBox.from_key(new_key, key_id="k2").decrypt(new_token, context=CONTEXT)
    retired = SecretBox.from_key(new_key, key_id="k2")
    with pytest.raises(SecretError, match="k1"):
        retired.decrypt(old_token, context=CONTEXT)


def test_the_key_id_is_authenticated(key: str) -> None:
    box = SecretBox.from_keys({"k1": key, "k2": key}, current="k1")
    token = box.encrypt(PLAINTEXT, context=CONTEXT)
    with pytest.raises(SecretError):
        box.decrypt(token.replace("v1.k1.", "v1.k2.", 1), context=CONTEXT)


@pytest.mark.parametrize(
    "bad_key",
    ["", "short", "A" * 42, "A" * 44 + "=", "+" * 43, "A" * 42 + "!"],
)
def test_bad_application_keys_are_refused_without_echo(bad_key: str) -> None:
    with pytest.raises(SecretError) as caught:
        SecretBox.from_key(bad_key)
    assert bad_key == "" or not _leaks(caught.value, bad_key)


def test_bad_key_sets_are_refused(key: str) -> None:
    with pytest.raises(SecretError):
        SecretBox.from_keys({}, current="k1")
    with pytest.raises(SecretError):
        SecretBox.from_keys({"k1": key}, current="k2")
    with pytest.raises(SecretError):
        SecretBox.from_keys({"k.1": key}, current="k.1")


def test_an_empty_context_is_refused(key: str) -> None:
    box = SecretBox.from_key(key)
    with pytest.raises(SecretError):
        box.encrypt(PLAINTEXT, context="")
    with pytest.raises(SecretError):
        box.decrypt(box.encrypt(PLAINTEXT, context=CONTEXT), context="")


def test_repr_and_pickle_do_not_expose_keys(key: str) -> None:
    box = SecretBox.from_keys({"k1": key, "k2": SecretBox.generate_key()}, current="k2")
    assert repr(box) == "SecretBox(key_ids=['k1', 'k2'], current='k2')"
    with pytest.raises(TypeError):
        pickle.dumps(box)


def test_new_webhook_secrets_are_standard_webhooks_secrets() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret != new_webhook_secret()
    assert len(base64.b64decode(new_webhook_secret(24)[6:])) == 24
    assert len(base64.b64decode(new_webhook_secret(64)[6:])) == 64


@pytest.mark.parametrize("nbytes", [0, 23, 65, True])
def test_new_webhook_secret_validates_its_size(nbytes: int) -> None:
    with pytest.raises(ValueError):
        new_webhook_secret(nbytes)


def test_mask_shows_only_the_last_four_characters() -> None:
    secret = new_webhook_secret()
    assert mask(secret) == "whsec_…" + secret[-4:]
    assert mask("whsec_short") == "whsec_…"
    assert mask("sk_0123456789abcdefXYZW") == "…XYZW"
    assert mask("") == "…"
