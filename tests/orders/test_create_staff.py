"""create_staff: a staff user in exactly one role's group, who can log in with the password given once."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from tests.admin.conftest import staff_groups_recreate

OUTPUT_PASSWORD = re.compile(r"^password \(shown once\): (\S+)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def groups(db, monkeypatch) -> None:
    monkeypatch.delenv("HUB_STAFF_PASSWORD", raising=False)
    if Group.objects.count() < 3:
        staff_groups_recreate()  # an earlier transactional test flushed what the migrations made


def _run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    call_command("create_staff", *args, stdout=out, **({"stdin": io.StringIO(stdin)} if stdin is not None else {}))
    return out.getvalue()


def _printed_password(output: str) -> str:
    found = OUTPUT_PASSWORD.findall(output)
    assert len(found) == 1, output
    return found[0]


def _permissions(group: str) -> set[str]:
    return {f"{app}.{codename}" for app, codename in
            Group.objects.get(name=group).permissions.values_list("content_type__app_label", "codename")}


def _logs_in(username: str, password: str) -> bool:
    client = Client()
    return client.login(username=username, password=password) and client.get(reverse("admin:index")).status_code == 200


@pytest.mark.parametrize("role, group", [("viewer", "Viewer"), ("operator", "Operator"),
                                         ("administrator", "Administrator")])
def test_each_role_makes_a_staff_user_with_exactly_that_groups_permissions_who_can_log_in(role, group):
    output = _run("sam", "--role", role, "--email", "sam@example.com")

    password = _printed_password(output)
    assert f"staff user sam created: {group}" in output
    user = User.objects.get(username="sam")
    assert (user.is_staff, user.is_superuser, user.email) == (True, False, "sam@example.com")
    assert list(user.groups.values_list("name", flat=True)) == [group]
    assert user.get_all_permissions() == _permissions(group) and _permissions(group)
    assert _logs_in("sam", password)
    assert not _logs_in("sam", password + "x")


def test_the_roles_differ_as_the_readme_says():
    viewer, operator, admin = (_permissions(group) for group in ("Viewer", "Operator", "Administrator"))

    assert viewer < operator < admin
    assert "orders.operate_orders" in operator - viewer and "orders.view_personal_data" in admin - operator


def test_a_password_from_the_environment_is_used_and_not_printed(monkeypatch):
    monkeypatch.setenv("HUB_STAFF_PASSWORD", "corr3ct-h0rse-battery")

    output = _run("sam", "--role", "operator")

    assert "corr3ct-h0rse-battery" not in output and "from $HUB_STAFF_PASSWORD" in output
    assert _logs_in("sam", "corr3ct-h0rse-battery")


def test_a_password_from_standard_input_is_used_and_not_printed():
    output = _run("sam", "--role", "viewer", "--password-stdin", stdin="st4ndard-input-pw\n")

    assert "st4ndard-input-pw" not in output
    assert _logs_in("sam", "st4ndard-input-pw")


def test_a_password_on_the_command_line_is_not_accepted():
    with pytest.raises(CommandError) as refused:
        _run("sam", "--role", "viewer", "--password", "visible-in-ps")

    assert "no --password: the command line shows in `ps`" in str(refused.value)
    assert "visible-in-ps" not in str(refused.value)
    assert not User.objects.filter(username="sam").exists()


def test_a_weak_password_is_refused_with_django_s_reasons(monkeypatch):
    monkeypatch.setenv("HUB_STAFF_PASSWORD", "12345678")

    with pytest.raises(CommandError, match="password refused: This password is too common"):
        _run("sam", "--role", "viewer")
    assert not User.objects.filter(username="sam").exists()


def test_an_existing_username_is_refused_and_keeps_its_password():
    password = _printed_password(_run("sam", "--role", "viewer"))

    with pytest.raises(CommandError, match="user 'sam' already exists: add --reset-password"):
        _run("sam", "--role", "administrator")

    assert list(User.objects.get(username="sam").groups.values_list("name", flat=True)) == ["Viewer"]
    assert _logs_in("sam", password)


def test_reset_password_sets_a_new_one_and_keeps_the_role():
    old = _printed_password(_run("sam", "--role", "operator"))

    output = _run("sam", "--reset-password")

    new = _printed_password(output)
    assert "new password set for sam (Operator)" in output
    assert _logs_in("sam", new) and not _logs_in("sam", old)
    assert list(User.objects.get(username="sam").groups.values_list("name", flat=True)) == ["Operator"]


def test_reset_password_with_a_role_moves_the_user_to_that_role_only():
    _run("sam", "--role", "administrator")

    _run("sam", "--reset-password", "--role", "viewer")

    user = User.objects.get(username="sam")
    assert list(user.groups.values_list("name", flat=True)) == ["Viewer"]
    assert user.get_all_permissions() == _permissions("Viewer")


def test_reset_password_of_an_unknown_user_is_refused():
    with pytest.raises(CommandError, match="no user 'nobody': leave out --reset-password to create it"):
        _run("nobody", "--reset-password")


def test_a_bad_role_is_refused_with_the_roles_to_choose_from():
    with pytest.raises(CommandError) as refused:
        _run("sam", "--role", "boss")

    assert str(refused.value) == "unknown role 'boss': choose one of viewer, operator, administrator"
    assert not User.objects.filter(username="sam").exists()


def test_creating_needs_a_role():
    with pytest.raises(CommandError, match="--role is required to create a user: one of viewer, operator"):
        _run("sam")


def test_missing_groups_say_to_run_migrate():
    Group.objects.filter(name="Operator").delete()

    with pytest.raises(CommandError) as refused:
        _run("sam", "--role", "operator")

    assert str(refused.value) == "the Operator group does not exist: run `.venv/bin/python manage.py migrate`"
    assert not User.objects.filter(username="sam").exists()
