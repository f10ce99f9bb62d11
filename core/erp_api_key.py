"""The key the ERP presents to the hub's API (/api/erp/<store>/…): made here, kept on the Store as its hash only.

Written by connect_store and the store admin, checked by orders' ERP API (orders/services/erp_requests.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from core.models import Store

log = logging.getLogger("hub.orders")

KEY_PREFIX = "hubk_"
KEY_HINT_CHARS = 8


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def erp_api_key_rotate(store: Store) -> str:
    """A new ERP API key for the store, returned once; only its SHA-256 and first characters are kept.

    The old key stops working at once: it is the same column.
    """
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    store.erp_api_key_hash, store.erp_api_key_hint = _key_hash(key), key[:KEY_HINT_CHARS]
    store.save(update_fields=["erp_api_key_hash", "erp_api_key_hint", "updated_at"])
    log.info("ERP API key of store %s rotated", store.name)  # never the key, nor any part of it
    return key


def erp_api_key_check(store: Store, presented: str | None) -> bool:
    """Whether `presented` is the store's key (compared in constant time); a store without a key has none."""
    if not store.erp_api_key_hash or not presented:
        return False
    return hmac.compare_digest(_key_hash(presented), store.erp_api_key_hash)
