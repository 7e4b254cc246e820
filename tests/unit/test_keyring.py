"""Application keys: configured, embedded (created once, owner-only), rotated."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.keyring import KEY_FILE, key_id, secret_box
from settler_jobs.secrets_box import SecretBox


def test_embedded_key_is_created_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, secret_key=None)
    token = secret_box(settings).encrypt("whsec_x", context="c")
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A second process reads the same key back: what one sealed, the other opens.
    assert secret_box(settings).decrypt(token, context="c") == "whsec_x"


def test_external_database_requires_a_configured_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://db/x", secret_key=None)
    with pytest.raises(ConfigError, match="SETTLER_SECRET_KEY is required"):
        secret_box(settings)
    assert not (tmp_path / KEY_FILE).exists()


def test_rotation_opens_old_tokens_and_seals_with_the_new_key(tmp_path: Path) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    before = Settings(data_dir=tmp_path, secret_key=SecretStr(old))
    token = secret_box(before).encrypt("s3cret", context="row-1")
    after = Settings(
        data_dir=tmp_path, secret_key=SecretStr(new), previous_secret_keys=[SecretStr(old)]
    )
    box = secret_box(after)
    assert box.decrypt(token, context="row-1") == "s3cret"
    assert box.current_key_id == key_id(new) != key_id(old)
    assert new not in repr(after) and old not in repr(after)


def test_outbound_policy_comes_from_settings(tmp_path: Path) -> None:
    import ipaddress

    from settler_jobs.net_guard import outbound_policy

    policy = outbound_policy(
        Settings(
            data_dir=tmp_path, outbound_allow_http=True, outbound_allow_networks=["127.0.0.1/32"]
        )
    )
    assert policy.allow_http
    assert policy.allow_networks == (ipaddress.ip_network("127.0.0.1/32"),)
    assert outbound_policy(Settings(data_dir=tmp_path)).allow_networks == ()
