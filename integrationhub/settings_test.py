"""Test settings: the production module plus throwaway secrets and fast retries."""

import os

# Set in os.environ, not only here: the subprocesses the tests start (sync, qcluster) inherit them.
# No .env: a developer's (written by `make run`: DEBUG on, its own keys) must not change what the tests see.
os.environ.setdefault("DJANGO_ENV_FILE", os.devnull)
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("HUB_SANDBOX", "1")  # the vtex_sandbox command
os.environ.setdefault("HUB_RETRY_BASE_SECONDS", "0.05")
os.environ.setdefault("HUB_RETRY_MAX_SECONDS", "0.2")
os.environ.setdefault("HUB_HTTP_TIMEOUT_SECONDS", "2")
os.environ.setdefault("HUB_IDLE_POLL_SECONDS", "0.05")
os.environ.setdefault("HUB_DISPATCH_POLL_SECONDS", "0.05")
os.environ.setdefault("HUB_ENCRYPTION_KEYS", "nyZhaQVq5cmIJbaN9qkMMfB9hyR5IRdWuL502D31WE0=")  # tests only
os.environ.setdefault("HUB_ERP_CONNECTORS", "orders.erp.HttpErpConnector,tests.orders.connectors.TaggingConnector")

from integrationhub.settings import *  # noqa: E402,F403
from integrationhub.settings import DATABASES, Q_CLUSTER, STORAGES  # noqa: E402

Q_CLUSTER["sync"] = True  # django-q2 reads this once, at import

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Dispatch runs in threads and `sync` in subprocesses: they need a file, not :memory:.
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test.sqlite3")}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The test client and the browser tests speak plain http to a server without collectstatic:
# no HTTPS redirect, no Secure-only cookies, no HSTS, and static names without a manifest.
# (tests/deploy/ checks the production values in real processes started without this module.)
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_AUTOREFRESH = True  # look files up per request: no warning about a STATIC_ROOT never collected
