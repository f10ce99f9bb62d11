"""Test settings: the production module plus throwaway secrets and fast retries."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret")
os.environ.setdefault("HUB_RETRY_BASE_SECONDS", "0.05")
os.environ.setdefault("HUB_RETRY_MAX_SECONDS", "0.2")
os.environ.setdefault("HUB_HTTP_TIMEOUT_SECONDS", "2")
os.environ.setdefault("HUB_IDLE_POLL_SECONDS", "0.05")
os.environ.setdefault("HUB_DISPATCH_POLL_SECONDS", "0.05")
os.environ.setdefault("HUB_ENCRYPTION_KEYS", "nyZhaQVq5cmIJbaN9qkMMfB9hyR5IRdWuL502D31WE0=")  # tests only
os.environ.setdefault("HUB_ERP_CONNECTORS", "orders.erp.HttpErpConnector,tests.orders.connectors.TaggingConnector")

from integrationhub.settings import *  # noqa: E402,F403
from integrationhub.settings import DATABASES, Q_CLUSTER  # noqa: E402

Q_CLUSTER["sync"] = True  # django-q2 reads this once, at import

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Dispatch runs in threads and `sync` in subprocesses: they need a file, not :memory:.
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test.sqlite3")}  # noqa: F405

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
