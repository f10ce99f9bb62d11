"""Secrets at rest: MultiFernet over settings.HUB_ENCRYPTION_KEYS (newest first), and model fields using it.

Encryption always uses the first key; decryption tries every key, so a new key can be put in front and
`manage.py rotate_secrets` re-encrypts the rows with it before the old key is removed.
Bottom layer: imports nothing from the apps.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

# Marks a stored value as ciphertext, so loaddata (ciphertext) and forms (plaintext) can share to_python().
PREFIX = "fernet:"
KEY_HELP = ('Set HUB_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first): generate one with '
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`')


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key (wrong key, or not ciphertext)."""


def new_key() -> str:
    return Fernet.generate_key().decode()


@lru_cache(maxsize=4)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    if not keys:
        raise ImproperlyConfigured(KEY_HELP)
    try:
        fernets = [Fernet(key.encode()) for key in keys]
    except (ValueError, TypeError):
        # Never echo the key itself: it is the secret.
        raise ImproperlyConfigured("HUB_ENCRYPTION_KEYS holds a malformed key (each must be 32 url-safe "
                                   "base64-encoded bytes). " + KEY_HELP) from None
    return MultiFernet(fernets), fernets[0]


def keys_check() -> None:
    """Raise ImproperlyConfigured unless HUB_ENCRYPTION_KEYS holds at least one well-formed key."""
    _fernets(_configured_keys())


def _configured_keys() -> tuple[str, ...]:
    return tuple(key.strip() for key in getattr(settings, "HUB_ENCRYPTION_KEYS", []) or [] if key.strip())


def encrypt(text: str) -> str:
    multi, _ = _fernets(_configured_keys())
    return PREFIX + multi.encrypt(text.encode()).decode()


def is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def decrypt(value: str) -> str:
    if not is_encrypted(value):
        raise SecretUnreadable("the stored value is not encrypted")
    multi, _ = _fernets(_configured_keys())
    try:
        return multi.decrypt(value[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in HUB_ENCRYPTION_KEYS decrypts it (wrong key?)") from None


def needs_rotation(value: str) -> bool:
    """Whether the value was encrypted with an older key than the first one."""
    _, newest = _fernets(_configured_keys())
    try:
        newest.decrypt(value[len(PREFIX):].encode())
    except InvalidToken:
        return True
    return False


class EncryptedTextField(models.TextField):
    """A string stored as Fernet ciphertext; Python code sees plaintext. Not usable in lookups."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        try:
            return self.loads(decrypt(value))
        except SecretUnreadable as exc:
            model = self.model._meta.label if hasattr(self, "model") else "?"
            raise SecretUnreadable(f"{model}.{self.name}: {exc}; run `manage.py check_secrets`") from None

    def to_python(self, value: Any) -> Any:
        if is_encrypted(value):  # from loaddata: dumpdata writes ciphertext
            return self.loads(decrypt(value))
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return encrypt(self.dumps(value))

    def value_to_string(self, obj: Any) -> str:
        """dumpdata writes the ciphertext, never the plaintext."""
        return encrypt(self.dumps(self.value_from_object(obj)))

    def loads(self, text: str) -> Any:
        return text

    def dumps(self, value: Any) -> str:
        return str(value)


class EncryptedJSONField(EncryptedTextField):
    """A JSON value (e.g. a dict of headers) stored as Fernet ciphertext of its JSON text."""

    def loads(self, text: str) -> Any:
        return json.loads(text)

    def dumps(self, value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not is_encrypted(value):
            try:
                return json.loads(value)
            except ValueError:
                raise SecretUnreadable(f"{self.name}: not JSON") from None
        return super().to_python(value)

    def formfield(self, **kwargs: Any) -> Any:
        return None  # no form edits it directly: the admin has a write-only field of its own


if __name__ == "__main__":
    print(new_key())
