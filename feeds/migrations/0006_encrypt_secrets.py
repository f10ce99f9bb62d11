"""Encrypt app tokens and ERP headers at rest (HUB_ENCRYPTION_KEYS): the columns become text holding ciphertext.

The rows are converted with raw SQL: the historical models' encrypted fields would try to decrypt the
plaintext that is still there.
"""

import json

import django.core.validators
from django.db import migrations

import integrationhub.crypto


def _rows(schema_editor, table: str, column: str) -> list[tuple]:
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {quote(column)} FROM {quote(table)}")
        return list(cursor.fetchall())


def _write(schema_editor, table: str, column: str, pk: int, value: str) -> None:
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE id = %s", [value, pk])


def _plain_headers(value) -> str:
    # PostgreSQL's jsonb::text and SQLite's JSON text both parse; a driver may hand back a dict already.
    data = value if isinstance(value, dict) else json.loads(value or "{}")
    return json.dumps(data, sort_keys=True)


def encrypt_rows(apps, schema_editor) -> None:
    crypto = integrationhub.crypto
    for pk, token in _rows(schema_editor, "feeds_store", "app_token"):
        if not crypto.is_encrypted(token):
            _write(schema_editor, "feeds_store", "app_token", pk, crypto.encrypt(token or ""))
    for pk, headers in _rows(schema_editor, "feeds_erpconnection", "headers"):
        if not crypto.is_encrypted(headers):
            _write(schema_editor, "feeds_erpconnection", "headers", pk, crypto.encrypt(_plain_headers(headers)))


def decrypt_rows(apps, schema_editor) -> None:
    crypto = integrationhub.crypto
    for pk, token in _rows(schema_editor, "feeds_store", "app_token"):
        if crypto.is_encrypted(token):
            _write(schema_editor, "feeds_store", "app_token", pk, crypto.decrypt(token))
    for pk, headers in _rows(schema_editor, "feeds_erpconnection", "headers"):
        if crypto.is_encrypted(headers):
            _write(schema_editor, "feeds_erpconnection", "headers", pk, crypto.decrypt(headers))


class Migration(migrations.Migration):

    dependencies = [
        ("feeds", "0005_store_pull_lease_is_a_job_lease"),
    ]

    operations = [
        migrations.AlterField(
            model_name="store",
            name="app_token",
            field=integrationhub.crypto.EncryptedTextField(
                validators=[django.core.validators.MaxLengthValidator(500)]),
        ),
        migrations.AlterField(
            model_name="erpconnection",
            name="headers",
            field=integrationhub.crypto.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows),
    ]
