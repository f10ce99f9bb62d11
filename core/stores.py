"""Creating and updating store connections: one validation for connect_store and the admin forms.

Each `clean_*` function takes one value as typed and returns it normalised, or raises ValidationError
with a message that names the thing but never echoes a secret.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils.module_loading import import_string

from core.models import ErpConnection, Store
from integrationhub import crypto

DEFAULT_ENVIRONMENT = "vtexcommercestable"
DEFAULT_ERP_TIMEOUT = 20.0
MAX_ERP_TIMEOUT = 120.0
MAX_HEADER_VALUE = 4096
# VTEX account and environment names are DNS labels: anything else could move the host (evil.com#...).
DNS_LABEL = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]{0,62}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SECRET_PARAM_WORDS = frozenset({"key", "token", "secret", "password", "passwd", "pwd", "pass", "signature", "sig",
                                "auth", "authorization", "credential", "credentials", "apikey", "jwt", "session"})
SECRET_PARAM_PARTS = ("token", "secret", "passw", "apikey", "signature", "credential", "accesskey", "privatekey")
HOOK_SECRET_MIN_LENGTH = 16  # the only credential of the hook endpoint: guessable ones are refused
HEADER_HINT = "send it as an ERP header instead (--erp-header-env / --erp-header, or the admin's ERP headers field)"


@dataclass(frozen=True)
class ConnectResult:
    store: Store
    created: bool
    changed: list[str]  # names of the fields that changed; secrets appear by name only


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "…")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    return value.strip()


def clean_store_name(value: Any) -> str:
    name = _text(value, "the store name")
    if not name or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii():
        raise ValidationError(f"store name {_shown(name)} must be letters, digits, - or _")
    return name


def clean_account(value: Any) -> str:
    account = _text(value, "the account")
    if not DNS_LABEL.fullmatch(account):
        raise ValidationError(f"{_shown(account)} is not a VTEX account name: letters, digits and hyphens only "
                              "(the {account} in https://{account}.vtexcommercestable.com.br)")
    return account


def clean_environment(value: Any) -> str:
    environment = _text(value, "the environment")
    if not DNS_LABEL.fullmatch(environment):
        raise ValidationError(f"{_shown(environment)} is not a VTEX environment name: letters, digits and hyphens "
                              f"only (usually {DEFAULT_ENVIRONMENT})")
    return environment


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clean_base_url(value: Any) -> str:
    """Empty (the real VTEX host), or scheme://host[:port]: https, or http on loopback only."""
    url = _text(value, "the base URL")
    if not url:
        return ""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValidationError("the base URL must not contain credentials (user:password@)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValidationError("the base URL must be scheme://host[:port] only: no path, query or fragment")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError("the base URL is not an http(s) URL") from None
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise ValidationError("the base URL must be https (http only on loopback: 127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def _secret_param(name: str) -> bool:
    lowered = name.lower()
    squashed = re.sub(r"[^a-z0-9]", "", lowered)
    return bool(SECRET_PARAM_WORDS & set(re.split(r"[^a-z0-9]+", lowered))) or any(
        part in squashed for part in SECRET_PARAM_PARTS)


def clean_erp_url(value: Any) -> str:
    """An http(s) URL without credentials in it: those belong in headers, which are encrypted and never shown."""
    url = _text(value, "the ERP URL")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValidationError(f"the ERP URL must not contain credentials (user:password@): {HEADER_HINT}")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _secret_param(name):
            raise ValidationError(f"the ERP URL's query parameter {_shown(name)} looks like a secret: {HEADER_HINT}")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError("the ERP URL is not an http(s) URL") from None
    return url


def clean_erp_timeout(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValidationError("the ERP timeout must be a number of seconds") from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_ERP_TIMEOUT:
        raise ValidationError(f"the ERP timeout must be more than 0 and at most {MAX_ERP_TIMEOUT:g} seconds")
    return seconds


def clean_erp_connector(value: Any) -> str:
    """Only the classes listed in settings.HUB_ERP_CONNECTORS: a dotted path is code the workers will run."""
    path = _text(value, "the ERP connector")
    allowed = list(settings.HUB_ERP_CONNECTORS)
    if path not in allowed:
        raise ValidationError(f"no ERP connector at {_shown(path)}: choose one of {', '.join(allowed)} "
                              "(settings HUB_ERP_CONNECTORS)")
    try:
        connector = import_string(path)
    except ImportError:
        raise ValidationError(f"the ERP connector {path!r} is listed but cannot be imported") from None
    if not callable(getattr(connector, "send", None)):
        raise ValidationError(f"{path!r} has no send() method: it is not an ERP connector")
    return path


def _clean_credential(value: Any, what: str) -> str:
    text = _text(value, what)
    if not text:
        raise ValidationError(f"{what} is required")
    if CONTROL.search(text) or " " in text:
        raise ValidationError(f"{what} contains a space, line break or control character")
    return text


def clean_app_key(value: Any) -> str:
    return _clean_credential(value, "app key")


def clean_app_token(value: Any) -> str:
    return _clean_credential(value, "app token")


def clean_hook_secret(value: Any) -> str:
    """The X-Hub-Hook-Token value VTEX will send: a header value, long enough not to be guessed."""
    secret = _clean_credential(value, "hook secret")
    if len(secret) < HOOK_SECRET_MIN_LENGTH:
        raise ValidationError(f"hook secret must be at least {HOOK_SECRET_MIN_LENGTH} characters "
                              "(or let the hub generate one: --generate-hook-secret)")
    return secret


def hook_secret_generate() -> str:
    """A new hook secret: 32 random bytes, URL-safe (43 characters), fit for an HTTP header."""
    return secrets.token_urlsafe(32)


def clean_header(name: str, value: str) -> tuple[str, str]:
    """One ERP header; the message names the header, never its value."""
    name, value = name.strip(), value.strip()
    if not HEADER_NAME.fullmatch(name):
        raise ValidationError(f"{_shown(name)} is not a valid HTTP header name")
    if CONTROL.search(value.replace("\t", " ")):
        raise ValidationError(f"the ERP header {name} contains a line break or control character")
    if len(value) > MAX_HEADER_VALUE:
        raise ValidationError(f"the ERP header {name} is longer than {MAX_HEADER_VALUE} characters")
    return name, value


def clean_erp_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError("the ERP headers must be a mapping of name to value")
    return dict(clean_header(str(name), str(text)) for name, text in value.items())


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' -> (name, value), as on the command line and in the admin."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise ValidationError("an ERP header must look like 'Name: value' (got a value without a name or colon)")
    return clean_header(name, value)


def redact_url(url: str) -> str:
    """The URL without any user:password part, for printing."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


STORE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": clean_store_name, "account": clean_account, "environment": clean_environment,
    "base_url": clean_base_url, "app_key": clean_app_key, "app_token": clean_app_token,
    "hook_secret": clean_hook_secret,
}
ERP_CHECKS: dict[str, Callable[[Any], Any]] = {
    "url": clean_erp_url, "timeout_seconds": clean_erp_timeout, "connector": clean_erp_connector,
    "headers": clean_erp_headers,
}


def _values_clean(values: dict[str, Any], checks: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        try:
            cleaned[name] = checks[name](value) if name in checks else value
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def store_values_clean(values: dict[str, Any]) -> dict[str, Any]:
    """Validate the given Store fields (by model field name); ValidationError maps field -> messages."""
    return _values_clean(values, STORE_CHECKS)


def erp_values_clean(values: dict[str, Any]) -> dict[str, Any]:
    """Validate the given ErpConnection fields (by model field name); ValidationError maps field -> messages."""
    return _values_clean(values, ERP_CHECKS)


@dataclass
class _Changes:
    errors: dict[str, list[str]] = field(default_factory=dict)

    def clean(self, values: dict[str, Any], cleaner: Callable[[dict], dict], prefix: str = "") -> dict[str, Any]:
        try:
            return cleaner(values)
        except ValidationError as exc:
            self.errors.update({prefix + name: messages for name, messages in exc.message_dict.items()})
            return {}


# What else a connected store gets, in store_connect's transaction: feeds registers its default feed
# configuration (FeedsConfig.ready()). A slot rather than an import: core never imports the apps above it.
_connect_also: Callable[[Store], object] | None = None


def store_connect_register(also: Callable[[Store], object]) -> None:
    """Run `also(store)` at the end of every store_connect, inside its transaction."""
    global _connect_also
    _connect_also = also


def _apply(instance: Any, values: dict[str, Any]) -> list[str]:
    changed = [name for name, value in values.items() if instance.pk is None or getattr(instance, name) != value]
    for name in changed:
        setattr(instance, name, values[name])
    return changed


@transaction.atomic
def store_connect(
    *,
    name: str,
    account: str | None = None,
    app_key: str | None = None,
    app_token: str | None = None,
    erp_url: str | None = None,
    erp_headers: dict[str, str] | None = None,
    environment: str | None = None,
    base_url: str | None = None,
    erp_timeout: float | None = None,
    erp_connector: str | None = None,
    hook_secret: str | None = None,
) -> ConnectResult:
    """Create or update a store and its ERP connection (and what feeds registered: its feed configuration).
    None = keep (or the default, when creating).

    A second identical call changes nothing; invalid input raises ValidationError (field -> messages,
    ERP fields prefixed `erp_`) and writes nothing.
    """
    name = clean_store_name(name)
    store = Store.objects.select_for_update().filter(name=name).first()
    erp = ErpConnection.objects.filter(store=store).first() if store else None
    given_store = {k: v for k, v in {"account": account, "environment": environment, "base_url": base_url,
                                     "app_key": app_key, "app_token": app_token,
                                     "hook_secret": hook_secret}.items() if v is not None}
    given_erp = {k: v for k, v in {"url": erp_url, "headers": erp_headers, "timeout_seconds": erp_timeout,
                                   "connector": erp_connector}.items() if v is not None}
    changes = _Changes()
    if store is None:
        for required in ("account", "app_key", "app_token"):
            if required not in given_store:
                changes.errors[required] = [f"{required.replace('_', ' ')} is required for a new store"]
        given_store = {"environment": DEFAULT_ENVIRONMENT, "base_url": "", **given_store}
    if erp is None:
        if "url" not in given_erp:
            changes.errors["erp_url"] = ["the ERP URL is required for a new ERP connection"]
        given_erp = {"headers": {}, "timeout_seconds": DEFAULT_ERP_TIMEOUT,
                     "connector": ErpConnection.DEFAULT_CONNECTOR, **given_erp}
    store_values = changes.clean(given_store, store_values_clean)
    erp_values = changes.clean(given_erp, erp_values_clean, prefix="erp_")
    if changes.errors:
        raise ValidationError(changes.errors)

    created = store is None
    store = store or Store(name=name)
    changed = _apply(store, store_values)
    erp = erp or ErpConnection(store=store)
    erp_changed = _apply(erp, erp_values)
    _full_clean(store, erp)
    if created:
        store.save()
        erp.store = store
    elif changed:
        store.save(update_fields=[*changed, "updated_at"])
    if erp.pk is None:
        erp.save()
    elif erp_changed:
        erp.save(update_fields=erp_changed)
    if _connect_also is not None:
        _connect_also(store)
    return ConnectResult(store=store, created=created, changed=changed + [f"erp {name}" for name in erp_changed])


def _full_clean(store: Store, erp: ErpConnection) -> None:
    """The model's own rules (column lengths...) as field errors, before anything is written."""
    errors: dict[str, list[str]] = {}
    for instance, prefix, exclude in ((store, "", []), (erp, "erp_", ["store"])):
        try:
            instance.full_clean(exclude=exclude, validate_unique=instance is store)
        except ValidationError as exc:
            errors.update({prefix + name: messages for name, messages in exc.message_dict.items()})
    if errors:
        raise ValidationError(errors)


# --- secrets at rest -----------------------------------------------------------------------------

@dataclass
class SecretsReport:
    checked: int = 0
    stale: int = 0  # readable, but encrypted with an older key: `rotate_secrets` moves them to the newest
    problems: list[str] = field(default_factory=list)  # one line each, naming the store, never a value


def _raw_rows(model: type, column: str, label: str) -> list[tuple[str, str]]:
    # Cast to text: the raw ciphertext, without the field decrypting it (which would raise on the first bad row).
    return list(model.objects.annotate(raw=Cast(column, TextField())).values_list(label, "raw"))


def secrets_check() -> SecretsReport:
    """Whether every stored secret decrypts with HUB_ENCRYPTION_KEYS: run at start-up, not found mid-dispatch."""
    report = SecretsReport()
    rows = [("app token", name, raw) for name, raw in _raw_rows(Store, "app_token", "name")]
    # An unset hook secret is stored as "": nothing to decrypt.
    rows += [("hook secret", name, raw) for name, raw in _raw_rows(Store, "hook_secret", "name") if raw]
    rows += [("ERP headers", name, raw) for name, raw in _raw_rows(ErpConnection, "headers", "store__name")]
    for what, name, raw in rows:
        report.checked += 1
        try:
            crypto.decrypt(raw)
        except crypto.SecretUnreadable as exc:
            report.problems.append(f"store {name}: its {what} cannot be decrypted: {exc}")
            continue
        report.stale += crypto.needs_rotation(raw)
    return report


@transaction.atomic
def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the newest key; returns how many values were rewritten."""
    rewritten = 0
    for store in Store.objects.select_for_update().only("pk", "app_token", "hook_secret"):
        rewritten += Store.objects.filter(pk=store.pk).update(app_token=store.app_token)
        if store.hook_secret:
            rewritten += Store.objects.filter(pk=store.pk).update(hook_secret=store.hook_secret)
    for erp in ErpConnection.objects.select_for_update().only("pk", "headers"):
        rewritten += ErpConnection.objects.filter(pk=erp.pk).update(headers=erp.headers)
    return rewritten
