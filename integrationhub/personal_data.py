"""Customers' personal data, hidden from staff without the *view personal data* permission.

The one masking mechanism of the hub: every page that shows order-derived or third-party text (VTEX
documents, ERP answers, feed payloads, error messages) passes it through `for_user` (or `mask_text` /
`mask_personal_data` after `can_see_personal_data`). It sits at the bottom layer: no imports from feeds/orders.

What `mask_text` hides in free text:
- e-mail addresses (also percent-encoded `a%40b.com`);
- runs of 6 or more digits, with single separators `. - / ( )` and a leading `+` allowed between them, and a
  space before a group of 4+ digits: CPF `123.456.789-09`, CNPJ, phones `+55 (11) 91234-5678`, `11 91234 5678`,
  card-like numbers `4111 1111 1111 1111`, postal codes;
- the string value of a personal JSON key quoted in the text (`"firstName": "Ana"`), even in a cut-off excerpt.
What it keeps, because staff need it and it identifies no one:
- VTEX order ids `1234567890123-01` (13 digits, dash, 2 digits; also `00-` seller prefix), and any run glued to
  letters or to a dash-joined identifier (`v502556llux-01`, `ERP-000123`, UUIDs, hex ids, invoice keys `CFe35...`);
- digits right after the word "sequence" (VTEX's order sequence, `sequence 502556`);
- ISO dates and timestamps (`2024-02-04T20:09:43.899958+00:00`), `dd/mm/yyyy` dates and `hh:mm:ss` times;
- amounts written with decimals (`1234567.89`, `1.234.567,89`), IPv4 addresses, and anything under 6 digits
  (HTTP statuses, durations, counts). Integer amounts of 6+ digits in free text are masked: when unsure, hide.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from django.db.models import BooleanField, QuerySet, Value

MASK = "•••"
PERMISSION = "orders.view_personal_data"

# Keys that hold a person's identity, contact, address or card anywhere in the document (VTEX's casing varies).
PERSONAL_KEYS = frozenset(k.lower() for k in (
    "email", "firstName", "lastName", "document", "documentType", "phone", "corporateName", "tradeName",
    "corporateDocument", "stateInscription", "corporatePhone", "userProfileId", "customerCode",
    "receiverName", "street", "number", "complement", "neighborhood", "postalCode", "reference",
    "geoCoordinates", "addressId", "firstDigits", "lastDigits", "cardHolder", "name_on_card", "cardNumber",
    "cvv2", "expireMonth", "expireYear", "followUpEmail",
))
# Containers whose every string is personal, whatever the key: an address, the customer's profile, and the
# invoice XML (names and addresses that no pattern can recognise).
PERSONAL_CONTAINERS = frozenset(k.lower() for k in (
    "clientProfileData", "address", "selectedAddresses", "billingAddress", "contactInformation",
    "embeddedInvoice", "giftRegistryData",
))
# Inside an address, these describe the place coarsely and help staff without identifying anyone.
_KEEP_IN_ADDRESS = frozenset(k.lower() for k in ("city", "state", "country", "addressType", "isCorporate"))
# Identifiers of the order and its items: shown as they are, never run through mask_text (an orderGroup or
# an EAN is a long digit run, not a person). Free text (openTextField, cancelReason, ...) is never listed here.
_IDENTIFIER_KEYS = frozenset(k.lower() for k in (
    "orderId", "orderGroup", "sequence", "sellerOrderId", "marketplaceOrderId", "lockId", "ean", "refId",
    "productId", "skuId", "sellerSku", "uniqueId", "orderFormId", "transactionId", "eventId",
))
# In free text a JSON key arrives without its container, so the ambiguous ones (a "number" or a "reference"
# may be an ERP's own) are left to the digit and e-mail patterns.
_TEXT_PERSONAL_KEYS = PERSONAL_KEYS - {"number", "reference", "documenttype", "addressid"}

# Starts only where a word starts: tried inside a long token, it would cost quadratic time.
_EMAIL = r"(?<![\w.%+\-])[\w.%+\-]+(?:@|%40)[\w\-]+(?:\.[\w\-]+)+"
_KEEP = r"|".join((
    r"(?:\d{2}-)?\d{13}-\d{2}",  # VTEX order id, optionally with the seller's "00-" prefix
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?",  # ISO date/time
    r"\d{1,2}/\d{1,2}/\d{4}",  # dd/mm/yyyy
    r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?",  # a time, with fractions of a second
    r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)",  # IPv4 (URLs of the ERP)
    r"\d{1,3}(?:[.,]\d{3})+[.,]\d{2}|\d+[.,]\d{2}",  # an amount with cents
    r"(?i:sequ[eê]nc(?:e|ia))\W{0,3}\d+",  # "sequence 502556" (or "sequência")
))
# One run of digits with single separators; the "+" and "(11) " of a phone may lead it. A plain space joins
# only a group of 4+ digits (phones, cards), so "HTTP 503 503" stays two numbers, not one 6-digit run.
_DIGITS = r"(?:\+\s?)?(?:\(\d{1,4}\)\s?)?\d(?:(?:[.\-/]|\)\s?|\s?\(| (?=\d{4}))?\d)*"
# Not inside an identifier, a decimal or a dashed id, on either side.
_BEFORE, _AFTER = r"(?<![\w\-.])", r"(?![\w]|[\-./]\w)"
_PATTERN = re.compile(
    rf"(?P<json>\"(?P<key>[A-Za-z_]+)\"\s*:\s*\")(?P<value>(?:[^\"\\]|\\.)*)"
    rf"|(?P<email>{_EMAIL})"
    rf"|{_BEFORE}(?P<keep>{_KEEP}){_AFTER}"
    rf"|{_BEFORE}(?P<digits>{_DIGITS}){_AFTER}"
)
MIN_DIGITS = 6


def can_see_personal_data(user: Any) -> bool:
    """True for users with `orders.view_personal_data` (superusers included); False for anonymous users."""
    return bool(user is not None and getattr(user, "is_active", False) and user.has_perm(PERMISSION))


def for_user(user: Any, value: Any) -> Any:
    """`value` as this user may see it: unchanged with the permission, masked without (text or JSON data)."""
    return value if can_see_personal_data(user) else masked(value)


def masked(value: Any) -> Any:
    """Text through `mask_text`, JSON data (dict, list) through `mask_personal_data`."""
    if value is None:
        return None
    return mask_text(value) if isinstance(value, str) else mask_personal_data(value)


# ---- admin pages -----------------------------------------------------------------------------------------
# A list column or a read-only field is a method that gets the row only, not the request. So the queryset
# carries the answer: each row loaded for a page knows whether that page's user may see personal data.
VIEWER_FLAG = "viewer_sees_personal_data"


def annotate_viewer(queryset: QuerySet, user: Any) -> QuerySet:
    """Rows that know whether `user` (who loads them) may see personal data; read it back with `shown`."""
    return queryset.annotate(**{VIEWER_FLAG: Value(can_see_personal_data(user), output_field=BooleanField())})


def shown(row: Any, value: Any) -> Any:
    """`value` (taken from `row`) as the row's viewer may see it; masked when the row was not annotated."""
    return value if getattr(row, VIEWER_FLAG, False) else masked(value)


class PersonalDataAdminMixin:
    """For ModelAdmins whose display methods call `shown(obj, ...)`: list and detail rows get the viewer flag."""

    def get_queryset(self, request: Any) -> QuerySet:
        return annotate_viewer(super().get_queryset(request), request.user)  # type: ignore[misc]


def mask_text(text: str) -> str:
    """`text` with e-mails, long digit runs and quoted personal JSON values masked (rules in the module doc)."""
    if not text:
        return text
    return _PATTERN.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    if match["json"] is not None:
        if match["key"].lower() in _IDENTIFIER_KEYS:
            return match[0]
        if match["key"].lower() in _TEXT_PERSONAL_KEYS:
            return match["json"] + (MASK if match["value"] else "")
        # Not personal: the value is still free text, masked by the other patterns.
        return match["json"] + mask_text(match["value"])
    if match["email"] is not None:
        return MASK
    if match["digits"] is not None and sum(ch.isdigit() for ch in match["digits"]) >= MIN_DIGITS:
        return MASK
    return match[0]  # kept: an identifier, a date, an amount, or too short to identify anyone


def mask_personal_data(document: Any) -> Any:
    """A copy of the document with personal values masked; structure, numbers and identifiers kept.

    Personal keys and containers are masked whole; every other string (free text such as `openTextField`,
    `cancelReason`, an ERP's message) goes through `mask_text`.
    """
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
    if isinstance(value, str) and lowered not in _IDENTIFIER_KEYS:
        return mask_text(value)
    return value
