"""Masking of customers' personal data in VTEX order documents, for staff without the permission."""

from __future__ import annotations

import copy
from typing import Any

MASK = "•••"
# Keys that hold a person's identity, contact or address anywhere in the document (VTEX's casing varies).
PERSONAL_KEYS = frozenset(k.lower() for k in (
    "email", "firstName", "lastName", "document", "documentType", "phone", "corporateName", "tradeName",
    "corporateDocument", "stateInscription", "corporatePhone", "userProfileId", "customerCode",
    "receiverName", "street", "number", "complement", "neighborhood", "postalCode", "reference",
    "geoCoordinates", "addressId", "firstDigits", "lastDigits", "cardHolder", "name_on_card",
))
# Containers whose every string is personal (e.g. an address), whatever the key.
PERSONAL_CONTAINERS = frozenset(k.lower() for k in ("clientProfileData", "address", "selectedAddresses"))


def mask_personal_data(document: Any) -> Any:
    """A copy of the document with personal values replaced by a mask; structure and other values kept."""
    return _mask(copy.deepcopy(document), inside_personal=False)


def _mask(value: Any, *, inside_personal: bool, key: str = "") -> Any:
    lowered = key.lower()
    personal = inside_personal or lowered in PERSONAL_CONTAINERS
    if isinstance(value, dict):
        return {k: _mask(v, inside_personal=personal, key=k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, inside_personal=personal, key=key) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if lowered in PERSONAL_KEYS or (personal and isinstance(value, str) and lowered not in _KEEP_IN_ADDRESS):
        return MASK
    return value


# Inside an address, these describe the place coarsely and help staff without identifying anyone.
_KEEP_IN_ADDRESS = frozenset(k.lower() for k in ("city", "state", "country", "addressType", "isCorporate"))
