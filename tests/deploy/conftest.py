"""Production-mode processes for the deploy tests: the environment `make serve` gets on a real host."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_env(tmp_path: Path) -> dict[str, str]:
    """DEBUG off, real-looking secrets, nothing from settings_test or from a developer's .env."""
    # settings_test puts its defaults in os.environ (for the subprocesses of other tests): drop them all.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_"))}
    env.update({
        "DJANGO_ENV_FILE": os.devnull,  # a developer's .env (DEBUG on, HUB_SANDBOX) must not leak in
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HUB_ENCRYPTION_KEYS": ",".join(settings.HUB_ENCRYPTION_KEYS),  # reads what the tests stored
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
