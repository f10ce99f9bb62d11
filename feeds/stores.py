"""Creating and updating store connections (connect_store, the admin)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils.module_loading import import_string

from feeds.models import ErpConnection, FeedConfig, Store

DEFAULT_FEED_STATUSES = ["ready-for-handling", "handling", "cancel", "canceled"]


@dataclass(frozen=True)
class ConnectResult:
    store: Store
    created: bool
    changed: list[str]  # names of the fields that changed; secrets appear by name only


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' -> (name, value), as on the command line."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise ValidationError("an ERP header must look like 'Name: value' (got a value without a name or colon)")
    if any(c in value for c in "\r\n"):
        raise ValidationError(f"the ERP header {name.strip()} contains a line break")
    return name.strip(), value.strip()


def redact_url(url: str) -> str:
    """The URL without any user:password part, for printing."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _check_url(value: str, what: str) -> None:
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError(f"{what} is not an http(s) URL: {value!r}") from None


@transaction.atomic
def store_connect(
    *,
    name: str,
    account: str,
    app_key: str,
    app_token: str,
    erp_url: str,
    erp_headers: dict[str, str] | None = None,
    environment: str = "vtexcommercestable",
    base_url: str = "",
    erp_timeout: float = 20.0,
    erp_connector: str = ErpConnection.DEFAULT_CONNECTOR,
) -> ConnectResult:
    """Create or update a store and its ERP connection; a second identical call changes nothing."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValidationError(f"store name {name!r} must be letters, digits, - or _")
    for value, what in ((account, "account"), (app_key, "app key"), (app_token, "app token")):
        if not value or not value.strip():
            raise ValidationError(f"{what} is required")
    _check_url(erp_url, "the ERP URL")
    if base_url:
        _check_url(base_url, "the base URL")
    if erp_timeout <= 0:
        raise ValidationError("the ERP timeout must be positive")
    try:
        connector = import_string(erp_connector)
    except ImportError:
        raise ValidationError(f"no ERP connector at {erp_connector!r} (a dotted path to a class)") from None
    if not callable(getattr(connector, "send", None)):
        raise ValidationError(f"{erp_connector!r} has no send() method: it is not an ERP connector")

    wanted_store = {"account": account.strip(), "environment": environment.strip(), "base_url": base_url.strip(),
                    "app_key": app_key.strip(), "app_token": app_token.strip()}
    wanted_erp = {"url": erp_url, "headers": dict(erp_headers or {}), "timeout_seconds": float(erp_timeout),
                  "connector": erp_connector}
    store = Store.objects.select_for_update().filter(name=name).first()
    created = store is None
    changed: list[str] = []
    if store is None:
        store = Store.objects.create(name=name, **wanted_store)
        changed = list(wanted_store)
    else:
        changed = [field for field, value in wanted_store.items() if getattr(store, field) != value]
        if changed:
            for field in changed:
                setattr(store, field, wanted_store[field])
            store.save(update_fields=[*changed, "updated_at"])
    erp = ErpConnection.objects.filter(store=store).first()
    if erp is None:
        ErpConnection.objects.create(store=store, **wanted_erp)
        changed += [f"erp {field}" for field in wanted_erp]
    else:
        erp_changed = [field for field, value in wanted_erp.items() if getattr(erp, field) != value]
        if erp_changed:
            for field in erp_changed:
                setattr(erp, field, wanted_erp[field])
            erp.save(update_fields=erp_changed)
            changed += [f"erp {field}" for field in erp_changed]
    FeedConfig.objects.get_or_create(store=store, defaults={"statuses": DEFAULT_FEED_STATUSES})
    return ConnectResult(store=store, created=created, changed=changed)
