"""Staff accounts: a user in exactly one of the three groups the migrations make (orders 0003 and 0005)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

# --role value -> the group made by orders/migrations/0003_staff_groups.py
ROLES = {"viewer": "Viewer", "operator": "Operator", "administrator": "Administrator"}
MIGRATE = "run `.venv/bin/python manage.py migrate`"


class StaffError(Exception):
    """The account cannot be created or changed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class StaffResult:
    user: AbstractUser
    created: bool
    role: str  # the group name the user is in after the call ("" for a user without a role group)
    generated_password: str  # "" when the caller gave the password


def _role_group(role: str) -> Group:
    key = role.strip().lower()
    if key not in ROLES:
        raise StaffError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    group = Group.objects.filter(name=ROLES[key]).first()
    if group is None:
        raise StaffError(f"the {ROLES[key]} group does not exist: {MIGRATE}")
    return group


def _password(user: AbstractUser, password: str | None) -> tuple[str, str]:
    """(password to set, the generated one or "") after Django's validators (AUTH_PASSWORD_VALIDATORS)."""
    if password is None:
        generated = secrets.token_urlsafe(16)
        return generated, generated
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise StaffError("password refused: " + " ".join(exc.messages)) from None
    return password, ""


def _role_name(user: AbstractUser) -> str:
    return ", ".join(user.groups.filter(name__in=ROLES.values()).order_by("name").values_list("name", flat=True))


@transaction.atomic
def staff_create(*, username: str, role: str, email: str = "", password: str | None = None) -> StaffResult:
    """A new staff user (admin access, not superuser) in the role's group; password None = generate one."""
    group = _role_group(role)
    users = get_user_model()
    if users.objects.filter(username=username).exists():
        raise StaffError(f"user {username!r} already exists: add --reset-password to give it a new password "
                         "(its role is kept unless --role is given)")
    user = users(username=username, email=email, is_staff=True)
    try:
        user.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise StaffError("; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
                         ) from None
    chosen, generated = _password(user, password)
    user.set_password(chosen)
    user.save()
    user.groups.set([group])
    return StaffResult(user=user, created=True, role=group.name, generated_password=generated)


@transaction.atomic
def staff_password_reset(*, username: str, role: str | None = None, email: str | None = None,
                         password: str | None = None) -> StaffResult:
    """A new password for an existing user; role None keeps its groups, a role replaces its role group."""
    group = _role_group(role) if role is not None else None
    user = get_user_model().objects.select_for_update().filter(username=username).first()
    if user is None:
        raise StaffError(f"no user {username!r}: leave out --reset-password to create it")
    chosen, generated = _password(user, password)
    user.set_password(chosen)
    fields = ["password"]
    if email is not None:
        try:
            validate_email(email)
        except ValidationError:
            raise StaffError(f"email: {email!r} is not an email address") from None
        user.email = email
        fields.append("email")
    if group is not None:
        user.is_staff = True  # a role is admin access: it means nothing without it
        fields.append("is_staff")
        user.groups.remove(*Group.objects.filter(name__in=ROLES.values()).exclude(pk=group.pk))
        user.groups.add(group)
    user.save(update_fields=fields)
    return StaffResult(user=user, created=False, role=_role_name(user), generated_password=generated)
