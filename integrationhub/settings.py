"""The only settings module: every value comes from the environment (see .env.example)."""

import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Optional file (`make run` writes a development one); values already in the environment win.
# DJANGO_ENV_FILE points elsewhere, e.g. /dev/null for a process that must see only its environment.
env.read_env(env.str("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env")))

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _required(*names: str) -> None:
    """Stop with one line, not a traceback: manage.py would otherwise bury the missing name in 40 lines."""
    missing = [name for name in names if not env.str(name, default="").strip()]
    if missing:
        why = ("`make run` writes a development .env" if DEBUG
               else "required when DJANGO_DEBUG is off; see docs/deploy.md")
        listed = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        sys.exit(f"Set {listed} in the environment or in .env ({why}; "
                 "every variable, and how to generate keys: .env.example).")


# No default key, not even for DEBUG: a known key signs sessions anyone could forge. `make run` writes one into .env.
# HUB_ENCRYPTION_KEYS (read below) is checked here too, so its absence is this one line rather than a traceback.
_required("DJANGO_SECRET_KEY", *([] if DEBUG else ["DJANGO_ALLOWED_HOSTS"]), "HUB_ENCRYPTION_KEYS")


def _fernet_keys_check() -> None:
    """A malformed key is one line here too: found later, in core's ready(), it was a 40-line traceback."""
    from cryptography.fernet import Fernet

    keys = [key.strip() for key in env.list("HUB_ENCRYPTION_KEYS", default=[]) if key.strip()]
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            # Never echo the key: it is the secret. Its position is enough to find it.
            sys.exit(f"HUB_ENCRYPTION_KEYS holds a malformed key (key {number} of {len(keys)}): each must be 32 "
                     "url-safe base64-encoded bytes; generate one with `python3 -c \"from cryptography.fernet "
                     "import Fernet; print(Fernet.generate_key().decode())\"` (.env.example).")


_fernet_keys_check()
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
# Full origins (https://hub.example.com) a POST may come from when the proxy's host differs from the Host header.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS, behind a TLS-terminating proxy ----------------------------------------------
# The proxy (docs/deploy.md) sets X-Forwarded-Proto and must overwrite any value the client sent.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SILENCED_SYSTEM_CHECKS: list[str] = []


def _secure(name: str, default: bool, check: str) -> bool:
    """On by default without DEBUG. Turned off on purpose (e.g. a local http test): `check --deploy` accepts that."""
    on = env.bool(name, default=default)
    if not on and not DEBUG and name in env.ENVIRON:
        SILENCED_SYSTEM_CHECKS.append(check)
    return on


SECURE_SSL_REDIRECT = _secure("DJANGO_SECURE_SSL_REDIRECT", not DEBUG, "security.W008")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http
SESSION_COOKIE_SECURE = _secure("DJANGO_SECURE_COOKIES", not DEBUG, "security.W012")
CSRF_COOKIE_SECURE = _secure("DJANGO_SECURE_COOKIES", not DEBUG, "security.W016")
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
if SECURE_HSTS_SECONDS == 0 and not DEBUG and "DJANGO_SECURE_HSTS_SECONDS" in env.ENVIRON:
    SILENCED_SYSTEM_CHECKS.append("security.W004")
SECURE_HSTS_INCLUDE_SUBDOMAINS = _secure("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG, "security.W005")
SECURE_HSTS_PRELOAD = _secure("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG, "security.W021")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "core",  # beneath feeds and orders: imports go integrationhub <- core <- feeds <- orders
    "feeds",
    "orders",
]
if env.bool("HUB_SANDBOX", default=False):
    INSTALLED_APPS.append("sandbox")  # the local VTEX + ERP (`vtex_sandbox`): demo and tests only

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files from gunicorn, before anything touches the session
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "integrationhub.urls"
WSGI_APPLICATION = "integrationhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    db = env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # The web server, the qcluster workers and the dispatch threads share one file:
        # WAL lets readers run beside the writer, IMMEDIATE takes the write lock up front
        # (no lock-upgrade deadlocks) and the timeout makes writers queue instead of failing.
        db.setdefault("OPTIONS", {}).update(
            {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    else:
        # Keep connections across requests (a URL's ?conn_max_age= wins): opening one per request cost
        # PostgreSQL 12-13 ms of CPU per hook call and capped the hook endpoint near 50/s (docs/performance.md).
        db.setdefault("CONN_MAX_AGE", env.int("DJANGO_CONN_MAX_AGE", default=60))
        db["CONN_HEALTH_CHECKS"] = True  # a connection the server closed is replaced, not failed on
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
FORMAT_MODULE_PATH = ["integrationhub.formats"]  # "2026-11-28 14:03:07 UTC" on every page
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "var" / "static")))  # by collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed copies: whitenoise serves them with a one-year immutable cache header.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "hub": {"level": env("HUB_LOG_LEVEL", default="INFO")},
        "django-q": {"level": "INFO"},  # django-q2 logs as "django-q" (the cluster starting, each task)
    },
}

# --- The hub's own knobs -------------------------------------------------------------
HUB_RETRY_BASE_SECONDS = env.float("HUB_RETRY_BASE_SECONDS", default=5.0)
HUB_RETRY_MAX_SECONDS = env.float("HUB_RETRY_MAX_SECONDS", default=900.0)
HUB_MAX_ATTEMPTS = env.int("HUB_MAX_ATTEMPTS", default=10)
HUB_DISPATCH_CONCURRENCY = env.int("HUB_DISPATCH_CONCURRENCY", default=12)
HUB_PULL_CONCURRENCY = env.int("HUB_PULL_CONCURRENCY", default=3)  # feed readers per store
HUB_DISPATCH_POLL_SECONDS = env.float("HUB_DISPATCH_POLL_SECONDS", default=0.5)  # idle dispatcher looks this often
HUB_HTTP_TIMEOUT_SECONDS = env.float("HUB_HTTP_TIMEOUT_SECONDS", default=20.0)
HUB_RATE_LIMIT_DEFAULT_SECONDS = env.float("HUB_RATE_LIMIT_DEFAULT_SECONDS", default=60.0)  # 429 without Retry-After
# Get order and List orders per VTEX account, across every process and machine (core/rate_limit.py); a call
# that finds no slot within the wait is retried later without using up the order's attempts.
HUB_VTEX_REQUESTS_PER_MINUTE = env.int("HUB_VTEX_REQUESTS_PER_MINUTE", default=6000)
HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS = env.float("HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS", default=10.0)
HUB_JOB_BUDGET_SECONDS = env.float("HUB_JOB_BUDGET_SECONDS", default=50.0)  # each scheduled run loops this long
HUB_IDLE_POLL_SECONDS = env.float("HUB_IDLE_POLL_SECONDS", default=2.0)  # pause between empty feed reads
# Dashboard health: a job that has not succeeded for this long is "late", then "down".
HUB_LATE_AFTER_SECONDS = env.float("HUB_LATE_AFTER_SECONDS", default=180.0)
HUB_DOWN_AFTER_SECONDS = env.float("HUB_DOWN_AFTER_SECONDS", default=900.0)
# Order claims and feed/job leases last this long unless the holder's heartbeat renews them: a process that
# dies (SIGKILL, a lost machine) leaves its work to others within this time.
HUB_CLAIM_SECONDS = env.float("HUB_CLAIM_SECONDS", default=30.0)
HUB_HEARTBEAT_SECONDS = env.float("HUB_HEARTBEAT_SECONDS", default=10.0)  # at most a third of HUB_CLAIM_SECONDS
# Runs of the continuous jobs at once, across every cluster and machine (core/jobs.py): each needs a job worker.
HUB_PULL_RUNS = env.int("HUB_PULL_RUNS", default=2)  # one reads each feed; another stands by to take it over
HUB_DISPATCH_RUNS = env.int("HUB_DISPATCH_RUNS", default=2)
# The ERP circuit breaker: after this many failures in a row, no order goes to that ERP for this long.
HUB_ERP_BREAKER_FAILURES = env.int("HUB_ERP_BREAKER_FAILURES", default=5)
HUB_ERP_BREAKER_SECONDS = env.float("HUB_ERP_BREAKER_SECONDS", default=30.0)
# The daily prune_history job removes committed events and finished orders' timelines older than this.
HUB_RETENTION_DAYS = env.int("HUB_RETENTION_DAYS", default=90)
# An invoice VTEX accepted whose invoiced event has not come after this long shows on the dashboard.
HUB_INVOICE_CONFIRM_MINUTES = env.float("HUB_INVOICE_CONFIRM_MINUTES", default=30.0)
# Fernet keys (comma-separated, newest first) that encrypt app tokens and ERP header values at rest.
HUB_ENCRYPTION_KEYS = env.list("HUB_ENCRYPTION_KEYS", default=[])
# The only ERP connector classes a store may name (the admin and connect_store refuse any other path).
HUB_ERP_CONNECTORS = env.list("HUB_ERP_CONNECTORS", default=["orders.erp.HttpErpConnector"])
# The hub's public https address: VTEX's order hook calls HUB_PUBLIC_URL/hooks/vtex/<store>/. Empty: no hook push.
HUB_PUBLIC_URL = env("HUB_PUBLIC_URL", default="")
HUB_AUTO_REAPPLY_CONFIG = env.bool("HUB_AUTO_REAPPLY_CONFIG", default=False)  # re-push a feed/hook config VTEX removed

HUB_RECONCILE_MINUTES = env.int("HUB_RECONCILE_MINUTES", default=15)  # reconcile_orders schedule (setup_schedules)
HUB_RECONCILE_MIN_AGE_MINUTES = env.float("HUB_RECONCILE_MIN_AGE_MINUTES", default=10.0)  # VTEX's list lags ~4 min

# --- Alerts and metrics (orders/alerts.py, orders/metrics.py) ------------------------------------
HUB_ALERT_QUIET_MINUTES = env.float("HUB_ALERT_QUIET_MINUTES", default=30.0)  # one reminder per incident at most this often
HUB_ALERT_ERP_FAILING_MINUTES = env.float("HUB_ALERT_ERP_FAILING_MINUTES", default=5.0)
HUB_ALERT_ATTENTION_MINUTES = env.float("HUB_ALERT_ATTENTION_MINUTES", default=15.0)
HUB_ALERT_ATTENTION_GROWTH = env.int("HUB_ALERT_ATTENTION_GROWTH", default=1)  # new needs-attention orders in that window
HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float("HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=5.0)
HUB_METRICS_TOKEN = env("HUB_METRICS_TOKEN", default="")  # empty: /metrics answers 404
HUB_METRICS_FLUSH_SECONDS = env.float("HUB_METRICS_FLUSH_SECONDS", default=5.0)  # each process writes its call counts
vars().update(env.email("DJANGO_EMAIL_URL", default="consolemail://"))  # e.g. smtp+tls://user:pass@host:587
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="hub@localhost")

Q_CLUSTER = {
    "name": "integrationhub",
    # The pull and dispatch runs (HUB_PULL_RUNS + HUB_DISPATCH_RUNS) plus two for the other jobs.
    "workers": env.int("HUB_Q_WORKERS", default=6),
    "timeout": int(HUB_JOB_BUDGET_SECONDS) + 40,
    "retry": int(HUB_JOB_BUDGET_SECONDS) + 70,  # must exceed timeout
    "max_attempts": 1,  # each job resumes from the database; the next schedule is the retry
    "catch_up": False,
    "save_limit": 500,
    "save_limit_per": "func",  # 500 results of each job: the minute jobs do not push out the daily prune's
    "ack_failures": True,
    "poll": 1,
    "label": "Jobs",
}
# The broker carries queued jobs only; the hub's own tables stay the record of what is left to do (a broker may
# lose a message: the minute schedules and the database claims make up for it). Default: the database itself.
# For several machines, django-q2's Redis broker: HUB_BROKER_URL=redis://host:6379/0.
HUB_BROKER_URL = env("HUB_BROKER_URL", default="")
if HUB_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
    Q_CLUSTER["redis"] = HUB_BROKER_URL
elif HUB_BROKER_URL:
    sys.exit(f"HUB_BROKER_URL must be a redis:// URL (or empty for the database broker), not {HUB_BROKER_URL.split(':')[0]}:…")
else:
    Q_CLUSTER["orm"] = "default"
