"""manage.py on a database that was never migrated: one line saying what to run, exit 1, no traceback."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.db_url import subprocess_database_url
from tests.feeds.test_commands import ROOT, _env

NOT_MIGRATED = "the database is not migrated: run `.venv/bin/python manage.py migrate`"
COMMANDS = [
    ["sync", "--until-idle", "--timeout", "5"],
    ["connect_store", "acme", "--account", "acme", "--app-key", "vtexappkey-acme-X", "--app-token", "t0k",
     "--erp-url", "http://127.0.0.1:9/erp"],
    ["create_staff", "sam", "--role", "viewer"],
]


def _pg(*args: str) -> subprocess.CompletedProcess:
    """createdb/dropdb against the server the tests use."""
    db = connection.settings_dict
    server = [part for flag, key in (("-h", "HOST"), ("-p", "PORT"), ("-U", "USER")) if db.get(key)
              for part in (flag, str(db[key]))]
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    return subprocess.run([args[0], *server, *args[1:]], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path: Path) -> Iterator[str]:
    """The DATABASE_URL of a database that exists and holds no table."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"  # SQLite creates the file on connect
        return
    if not connection.settings_dict["ENGINE"].endswith("postgresql"):
        pytest.skip("the suite runs on SQLite: the PostgreSQL case runs with DATABASE_URL=postgres://...")
    name = f"hub_never_migrated_{secrets.token_hex(4)}"
    created = _pg("createdb", name)
    assert created.returncode == 0, created.stderr
    try:
        yield subprocess_database_url().rsplit("/", 1)[0] + "/" + name
    finally:
        _pg("dropdb", "--if-exists", "--force", name)


@pytest.mark.parametrize("command", COMMANDS, ids=[args[0] for args in COMMANDS])
def test_a_command_on_an_unmigrated_database_says_to_migrate(empty_database, command):
    result = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=_env(DATABASE_URL=empty_database),
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [NOT_MIGRATED]
    assert "Traceback" not in result.stdout + result.stderr
