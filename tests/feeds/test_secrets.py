"""Secrets at rest: app tokens and ERP header values are ciphertext in the database, in dumps and in backups."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.models import ErpConnection, Store
from core.stores import secrets_check
from tests.conftest import TOKEN
from tests.feeds.test_commands import ROOT, _env, _manage

pytestmark = pytest.mark.django_db(transaction=True)

ERP_SECRET = "Bearer erp-secret-9931"
PREVIOUS_MIGRATION = ("feeds", "0005_store_pull_lease_is_a_job_lease")


def _connect_without_secrets_on_argv(sandbox) -> list[str]:
    return ["connect_store", "acme", "--account", "sandbox", "--app-key", "vtexappkey-sandbox-HUB",
            "--base-url", sandbox.url, "--erp-url", sandbox.erp_url, "--erp-header-env", "Authorization=ERP_AUTH"]


def _raw(table: str, column: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table}")
        return [row[0] for row in cursor.fetchall()]


def _database_dump() -> bytes:
    """What a backup of the database holds: pg_dump on PostgreSQL, the file itself on SQLite."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        connection.close()  # the WAL is folded back when the last connection closes
        return b"".join(Path(db["NAME"] + suffix).read_bytes() for suffix in ("", "-wal")
                        if Path(db["NAME"] + suffix).exists())
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    args = ["pg_dump", "--no-owner", "-d", db["NAME"]]
    for flag, key in (("-h", "HOST"), ("-p", "PORT"), ("-U", "USER")):
        if db.get(key):
            args += [flag, str(db[key])]
    result = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_connect_store_takes_the_token_and_header_values_from_the_environment(sandbox, transactional_db):
    args = [*_connect_without_secrets_on_argv(sandbox), "--app-token-env"]

    result = _manage(*args, VTEX_APP_TOKEN=TOKEN, ERP_AUTH=ERP_SECRET)

    assert result.returncode == 0, result.stderr
    assert TOKEN not in " ".join(args) and ERP_SECRET not in " ".join(args)  # nothing for `ps` to show
    store = Store.objects.get(name="acme")
    assert store.app_token == TOKEN and store.erp.headers == {"Authorization": ERP_SECRET}
    assert TOKEN not in result.stdout + result.stderr and "erp-secret-9931" not in result.stdout + result.stderr
    assert "ERP headers: Authorization (values hidden)" in result.stdout


def test_connect_store_takes_the_token_from_standard_input(sandbox, transactional_db):
    args = [sys.executable, "manage.py", *_connect_without_secrets_on_argv(sandbox), "--app-token-stdin"]

    result = subprocess.run(args, cwd=ROOT, env=_env(ERP_AUTH=ERP_SECRET), input=TOKEN + "\n", capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert Store.objects.get(name="acme").app_token == TOKEN
    assert TOKEN not in result.stdout + result.stderr


def test_a_token_left_in_the_environment_is_not_used_unless_asked_for(sandbox, transactional_db):
    assert _manage(*_connect_without_secrets_on_argv(sandbox), "--app-token-env", VTEX_APP_TOKEN=TOKEN,
                   ERP_AUTH=ERP_SECRET).returncode == 0

    again = _manage("connect_store", "acme", "--erp-timeout", "3", VTEX_APP_TOKEN="another-stores-token")
    unset = _manage("connect_store", "acme", "--app-token-env", "NO_SUCH_VAR")

    assert again.returncode == 0 and "app_token" not in again.stdout
    assert Store.objects.get(name="acme").app_token == TOKEN
    assert unset.returncode != 0 and "the environment variable NO_SUCH_VAR is not set" in unset.stderr


def test_a_header_from_an_unset_variable_is_a_clear_error_and_writes_nothing(sandbox, transactional_db):
    result = _manage(*_connect_without_secrets_on_argv(sandbox), "--app-token-env", VTEX_APP_TOKEN=TOKEN)

    assert result.returncode != 0
    assert "the environment variable ERP_AUTH is not set" in result.stderr
    assert Store.objects.count() == 0


def test_no_dump_of_the_database_holds_a_secret(sandbox, transactional_db):
    assert _manage(*_connect_without_secrets_on_argv(sandbox), "--app-token-env", VTEX_APP_TOKEN=TOKEN,
                   ERP_AUTH=ERP_SECRET).returncode == 0
    # As an operator runs it: `manage.py dumpdata` in its own process.
    dumpdata = _manage("dumpdata", "core")
    backup = _database_dump()

    assert dumpdata.returncode == 0, dumpdata.stderr
    dumped = dumpdata.stdout
    assert '"name": "acme"' in dumped and b"acme" in backup  # the dumps do hold the store
    for secret in (TOKEN, "erp-secret-9931"):
        assert secret not in dumped
        assert secret.encode() not in backup
    assert all(value.startswith("fernet:") for value in _raw("feeds_store", "app_token")
               + _raw("feeds_erpconnection", "headers"))
    rows = {row["model"]: row["fields"] for row in json.loads(dumped)}
    assert rows["core.store"]["app_token"].startswith("fernet:")  # dumpdata writes ciphertext
    assert rows["core.erpconnection"]["headers"].startswith("fernet:")


def test_dumpdata_output_loads_back_with_the_same_secrets(store, tmp_path):
    fixture = tmp_path / "feeds.json"
    assert _manage("dumpdata", "core.store", "core.erpconnection", "--output", str(fixture)).returncode == 0
    ErpConnection.objects.all().delete()
    Store.objects.filter(pk=store.pk).update(app_token="something else")

    call_command("loaddata", str(fixture), stdout=io.StringIO())

    loaded = Store.objects.get(pk=store.pk)
    assert loaded.app_token == TOKEN and loaded.erp.headers == {"Authorization": ERP_SECRET}


def test_rotate_secrets_re_encrypts_every_row_with_the_newest_key(store, settings):
    old_key = settings.HUB_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = _raw("feeds_store", "app_token") + _raw("feeds_erpconnection", "headers")
    settings.HUB_ENCRYPTION_KEYS = [new_key, old_key]
    assert secrets_check().stale == 2
    out = io.StringIO()

    call_command("rotate_secrets", stdout=out)

    assert "re-encrypted 2 secret(s)" in out.getvalue()
    after = _raw("feeds_store", "app_token") + _raw("feeds_erpconnection", "headers")
    assert set(after).isdisjoint(before)
    settings.HUB_ENCRYPTION_KEYS = [new_key]  # the old key can go now
    assert secrets_check().problems == [] and secrets_check().stale == 0
    loaded = Store.objects.get(pk=store.pk)
    assert loaded.app_token == TOKEN and loaded.erp.headers == {"Authorization": ERP_SECRET}
    settings.HUB_ENCRYPTION_KEYS = [old_key]
    assert len(secrets_check().problems) == 2


def test_check_secrets_passes_with_the_right_key_and_hints_at_rotation(store, settings):
    out = io.StringIO()
    call_command("check_secrets", stdout=out)
    assert "secrets ok: 2 stored secret(s) decrypt" in out.getvalue() and "rotate" not in out.getvalue()

    settings.HUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.HUB_ENCRYPTION_KEYS]
    out = io.StringIO()
    call_command("check_secrets", stdout=out)
    assert "2 under an older key: run `manage.py rotate_secrets`" in out.getvalue()


def test_a_wrong_key_is_named_per_store_by_check_secrets_and_rotate_refuses(store, settings):
    settings.HUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(CommandError) as checked:
        call_command("check_secrets")
    with pytest.raises(CommandError):
        call_command("rotate_secrets")

    message = str(checked.value)
    assert "store acme: its app token cannot be decrypted" in message
    assert "store acme: its ERP headers cannot be decrypted" in message
    assert TOKEN not in message


def test_check_secrets_exits_1_with_a_wrong_key(store):
    result = _manage("check_secrets", HUB_ENCRYPTION_KEYS=Fernet.generate_key().decode())

    assert result.returncode == 1
    assert "store acme: its app token cannot be decrypted" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_sync_with_a_wrong_key_stops_at_start_before_any_call(sandbox, store):
    sandbox.create_orders(2)

    result = _manage("sync", "--until-idle", "--timeout", "30", HUB_ENCRYPTION_KEYS=Fernet.generate_key().decode())

    assert result.returncode == 1
    assert "store acme: its app token cannot be decrypted" in result.stderr
    assert sandbox.requests == []  # stopped before reading any feed, not in the middle of dispatch


@pytest.mark.parametrize("keys, expected", [
    ("", ["Set HUB_ENCRYPTION_KEYS"]),  # settings.py says it first, without a traceback
    (" , ", ["Set HUB_ENCRYPTION_KEYS", "Fernet.generate_key()"]),
    ("not-a-fernet-key-at-all", ["HUB_ENCRYPTION_KEYS holds a malformed key", "Fernet.generate_key()"]),
])
def test_a_missing_or_malformed_key_stops_every_command_at_start_up(transactional_db, keys, expected):
    result = _manage("check_secrets", HUB_ENCRYPTION_KEYS=keys)

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert all(text in last_line for text in expected), last_line
    assert "not-a-fernet-key-at-all" not in result.stderr  # a key is never echoed


def test_the_migration_encrypts_plaintext_rows_and_reverses(store):
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate([PREVIOUS_MIGRATION])
        old_apps = executor.loader.project_state([PREVIOUS_MIGRATION]).apps
        # Reversed: plaintext again, as before this change.
        assert _raw("feeds_store", "app_token") == [TOKEN]
        old_store = old_apps.get_model("feeds", "Store").objects.create(
            name="legacy", account="legacy", app_key="k", app_token="legacy-token-55")
        old_apps.get_model("feeds", "ErpConnection").objects.create(
            store=old_store, url="https://erp.example.com/orders", headers={"X-Api-Key": "legacy-key-66"})
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)

    raw = _raw("feeds_store", "app_token") + _raw("feeds_erpconnection", "headers")
    assert len(raw) == 4 and all(value.startswith("fernet:") for value in raw)
    assert not [value for value in raw if "legacy-" in value or TOKEN in value]
    legacy = Store.objects.get(name="legacy")
    assert legacy.app_token == "legacy-token-55" and legacy.erp.headers == {"X-Api-Key": "legacy-key-66"}
    assert Store.objects.get(name="acme").app_token == TOKEN
