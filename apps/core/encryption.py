"""Secrets kept in the database (a worker's CML password), encrypted at rest with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`).

The key is settings.FIELD_ENCRYPTION_KEY: one or more Fernet keys (`Fernet.generate_key()`), comma-separated;
the first encrypts, all decrypt (rotation: put the new key first, keep the old one until every secret was
set again). Unset, it is derived from SECRET_KEY (keys derived from SECRET_KEY_FALLBACKS decrypt too), so
changing SECRET_KEY makes the stored secrets unreadable: production sets FIELD_ENCRYPTION_KEY.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionFailed(Exception):
    """The value was not encrypted with any of the configured keys (the key changed, or it is not a token)."""


def _derived(secret: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(b"labmanager.field-encryption\0" + secret.encode()).digest())


def _fernet() -> MultiFernet:
    configured = [key.strip() for key in settings.FIELD_ENCRYPTION_KEY if key.strip()]
    if configured:
        keys = [key.encode() for key in configured]
    else:
        keys = [_derived(secret) for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(text: str) -> str:
    """A token (ASCII, about 4/3 of the text plus 76 characters) that only `decrypt` turns back."""
    return _fernet().encrypt(text.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise DecryptionFailed("the value cannot be decrypted with FIELD_ENCRYPTION_KEY / SECRET_KEY") from exc
