"""The only settings module: every value comes from the environment (see .env.example)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.read_env(str(BASE_DIR / ".env"))  # optional file; values already in the environment win

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-only-not-secret") if DEBUG else env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "feeds",
    "orders",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "hub": {"level": env("HUB_LOG_LEVEL", default="INFO")},
        "django_q": {"level": "INFO"},
    },
}

# --- The hub's own knobs -------------------------------------------------------------
HUB_RETRY_BASE_SECONDS = env.float("HUB_RETRY_BASE_SECONDS", default=5.0)
HUB_RETRY_MAX_SECONDS = env.float("HUB_RETRY_MAX_SECONDS", default=900.0)
HUB_MAX_ATTEMPTS = env.int("HUB_MAX_ATTEMPTS", default=10)
HUB_DISPATCH_CONCURRENCY = env.int("HUB_DISPATCH_CONCURRENCY", default=12)
HUB_SYNC_PULL_PROCESS = env.bool("HUB_SYNC_PULL_PROCESS", default=True)  # `sync` reads feeds in a child process
HUB_PULL_CONCURRENCY = env.int("HUB_PULL_CONCURRENCY", default=3)  # feed readers per store
HUB_DISPATCH_POLL_SECONDS = env.float("HUB_DISPATCH_POLL_SECONDS", default=0.5)  # idle dispatcher looks this often
HUB_HTTP_TIMEOUT_SECONDS = env.float("HUB_HTTP_TIMEOUT_SECONDS", default=20.0)
HUB_RATE_LIMIT_DEFAULT_SECONDS = env.float("HUB_RATE_LIMIT_DEFAULT_SECONDS", default=60.0)  # 429 without Retry-After
HUB_JOB_BUDGET_SECONDS = env.float("HUB_JOB_BUDGET_SECONDS", default=50.0)  # each scheduled run loops this long
HUB_IDLE_POLL_SECONDS = env.float("HUB_IDLE_POLL_SECONDS", default=2.0)  # pause between empty feed reads
# Dashboard health: a job that has not succeeded for this long is "late", then "down".
HUB_LATE_AFTER_SECONDS = env.float("HUB_LATE_AFTER_SECONDS", default=180.0)
HUB_DOWN_AFTER_SECONDS = env.float("HUB_DOWN_AFTER_SECONDS", default=900.0)
HUB_CLAIM_SECONDS = env.float("HUB_CLAIM_SECONDS", default=300.0)  # a crashed worker's claim expires after this
# Fernet keys (comma-separated, newest first) that encrypt app tokens and ERP header values at rest.
HUB_ENCRYPTION_KEYS = env.list("HUB_ENCRYPTION_KEYS", default=[])
# The only ERP connector classes a store may name (the admin and connect_store refuse any other path).
HUB_ERP_CONNECTORS = env.list("HUB_ERP_CONNECTORS", default=["orders.erp.HttpErpConnector"])

Q_CLUSTER = {
    "name": "integrationhub",
    "orm": "default",  # the database is the broker: no Redis to run
    "workers": env.int("HUB_Q_WORKERS", default=3),
    "timeout": int(HUB_JOB_BUDGET_SECONDS) + 40,
    "retry": int(HUB_JOB_BUDGET_SECONDS) + 70,  # must exceed timeout
    "max_attempts": 1,  # each job resumes from the database; the next schedule is the retry
    "catch_up": False,
    "save_limit": 500,
    "ack_failures": True,
    "poll": 1,
    "label": "Jobs",
}
