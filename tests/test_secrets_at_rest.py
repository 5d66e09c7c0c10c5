"""Secrets at rest: the signing key is a file of its own (0600), shared by servers that are pointed at it, and
a key an older state kept in the database moves to the file once and leaves the database."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shoal import services
from shoal.auth import at_rest
from shoal.config import Settings
from shoal.store import models
from shoal.store.db import Database


def pem_of(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_a_key_the_database_held_moves_to_its_file_and_leaves_the_database(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir(mode=0o755)
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    db = Database(settings.db_url)
    db.migrate()
    with db.write() as s:
        s.add(models.SigningKey(kid="old", private_pem=pem_of(old), created_at=datetime.now(UTC)))
    db.dispose()
    svc = services.build(settings)
    try:
        key = settings.signing_key_file
        assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert [k.kid for k in svc.tokens.keys] == [at_rest.key_id(old)]  # tokens are signed with the same key
        with svc.db.read() as s:
            assert s.query(models.SigningKey).count() == 0
        assert stat.S_IMODE((settings.state_dir / "shoal.db").stat().st_mode) == 0o600
    finally:
        svc.db.dispose()


def test_servers_pointed_at_one_key_file_sign_alike_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "key.pem"
    first = at_rest.load_signing_key(shared)
    second = at_rest.load_signing_key(shared)
    assert first.kid == second.kid and pem_of(first.private_key) == pem_of(second.private_key)
    shared.chmod(0o644)  # loosened by hand: made private again on the next start
    at_rest.load_signing_key(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(at_rest.SecretFileError, match="does not hold a PEM private key"):
        at_rest.load_signing_key(bad)


def test_the_state_directory_is_closed_to_others_or_only_passable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    at_rest.lock_down_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    at_rest.lock_down_state_dir(state, traversable=True)  # the process runtime's user passes through
    assert stat.S_IMODE(state.stat().st_mode) == 0o701
