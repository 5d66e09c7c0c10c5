"""Client secrets: generated with a CSPRNG, stored only as salted scrypt hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

_N, _R, _P = 2**14, 8, 1


def new_secret() -> str:
    # Entra client secrets are 40 characters; keep the same shape, and a tilde as Entra puts in them. The first
    # character is a letter: a secret starting with '-' reads as an option to `az login -p`.
    raw = secrets.token_urlsafe(30)[:36]
    return secrets.choice(string.ascii_letters) + raw[1:3] + "8Q~" + raw[3:37]


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt_b64), n=_N, r=_R, p=_P, dklen=32)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))
