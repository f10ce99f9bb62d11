"""Production settings as `manage.py` sees them in a real process: safe defaults, one-line errors."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import ROOT, manage


def test_check_deploy_with_production_settings_reports_nothing(production_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env)

    assert result.returncode == 0, result.stdout + result.stderr
    # "0 silenced": the defaults pass on their own, not because a warning was switched off.
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "HUB_ENCRYPTION_KEYS"])
def test_a_missing_production_setting_is_one_clear_line(production_env, missing):
    del production_env[missing]

    result = manage("check", env=production_env)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Set {missing} in the environment or in .env (required when DJANGO_DEBUG is off; see docs/deploy.md; "
        "every variable, and how to generate keys: .env.example)."
    ]


def test_debug_needs_a_secret_key_too(production_env):
    del production_env["DJANGO_SECRET_KEY"]
    production_env["DJANGO_DEBUG"] = "1"

    result = manage("check", env=production_env)

    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Set DJANGO_SECRET_KEY in the environment or in .env (`make run` writes a development .env" in result.stderr


def test_https_defaults_turned_off_on_purpose_pass_check_deploy(production_env):
    # A local `make serve` over plain http (docs/deploy.md): the operator's choice, not a forgotten setting.
    production_env.update(DJANGO_SECURE_SSL_REDIRECT="0", DJANGO_SECURE_COOKIES="0", DJANGO_SECURE_HSTS_SECONDS="0")

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "(4 silenced)" in result.stdout  # redirect, two cookies, HSTS


def test_a_weak_secret_key_fails_check_deploy(production_env):
    production_env["DJANGO_SECRET_KEY"] = "change-me"

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env)

    assert result.returncode != 0 and "security.W009" in result.stderr


def test_the_sandbox_app_is_installed_only_when_asked_for(production_env):
    without = manage("vtex_sandbox", "--help", env=production_env)
    production_env["HUB_SANDBOX"] = "1"
    with_it = manage("vtex_sandbox", "--help", env=production_env)

    assert without.returncode != 0 and "Unknown command: 'vtex_sandbox'" in without.stderr
    assert with_it.returncode == 0, with_it.stderr


def test_all_four_password_validators_refuse_a_weak_password(production_env):
    code = ("from django.contrib.auth.password_validation import validate_password as v\n"
            "from django.contrib.auth.models import User\n"
            "from django.core.exceptions import ValidationError\n"
            "try:\n    v('1234567', User(username='1234567'))\n"
            "except ValidationError as e:\n    print('|'.join(sorted(x.code for x in e.error_list)))\n")
    result = manage("shell", "--verbosity", "0", "-c", code, env=production_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("password_entirely_numeric|password_too_common|password_too_short|"
                                     "password_too_similar")


def test_env_example_documents_every_variable_the_settings_read():
    read = set(re.findall(r'env(?:\.\w+)?\("([A-Z][A-Z0-9_]+)"', (ROOT / "integrationhub/settings.py").read_text()))
    documented = (ROOT / ".env.example").read_text()

    assert len(read) > 20
    assert sorted(name for name in read if name not in documented) == []


@pytest.mark.parametrize(("keys", "bad", "which"), [("nonsense", "nonsense", "key 1 of 1"),
                                                  ("{good},not-a-key", "not-a-key", "key 2 of 2")])
def test_a_malformed_encryption_key_is_one_clear_line_that_does_not_show_the_key(production_env, keys, bad, which):
    production_env["HUB_ENCRYPTION_KEYS"] = keys.format(good=production_env["HUB_ENCRYPTION_KEYS"].split(",")[0])

    result = manage("check", env=production_env)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"HUB_ENCRYPTION_KEYS holds a malformed key ({which}): each must be 32 url-safe")
    assert bad not in line  # the key is the secret: never echoed
