import argparse
import os
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.services.accounts import ROLES, StaffError, StaffResult, staff_create, staff_password_reset

PASSWORD_ENV = "HUB_STAFF_PASSWORD"


class Command(BaseCommand):
    help = (f"Create a staff user in one role ({', '.join(ROLES)}), or give an existing one a new password with "
            f"--reset-password. The password comes from ${PASSWORD_ENV} or --password-stdin, else one is generated "
            "and printed once; never from the command line, where `ps` and shell history would keep it.")
    stealth_options = ("stdin",)  # call_command(..., stdin=StringIO(...)) in tests

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", metavar="|".join(ROLES),
                            help="Viewer reads; Operator also acts on orders and runs jobs; Administrator also "
                                 "manages stores, credentials and feeds (required to create)")
        parser.add_argument("--email", help="the user's email address")
        parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        # Declared only to refuse it by name: otherwise argparse reads `--password X` as --password-stdin
        # (an abbreviation) and echoes X back in its error.
        parser.add_argument("--password", help=argparse.SUPPRESS)
        parser.add_argument("--reset-password", action="store_true",
                            help="the user exists: set a new password; its role is kept unless --role is given")

    def handle(self, *args, **o) -> None:
        if o["password"] is not None:
            raise CommandError(f"no --password: the command line shows in `ps` and shell history; set "
                               f"${PASSWORD_ENV} or use --password-stdin")
        password, source = self._password(o)
        try:
            if o["reset_password"]:
                result = staff_password_reset(username=o["username"], role=o["role"], email=o["email"],
                                              password=password)
            elif o["role"] is None:
                raise CommandError(f"--role is required to create a user: one of {', '.join(ROLES)}")
            else:
                result = staff_create(username=o["username"], role=o["role"], email=o["email"] or "",
                                      password=password)
        except StaffError as exc:
            raise CommandError(str(exc)) from None
        self._print(result, source)

    def _password(self, o: dict) -> tuple[str | None, str]:
        """(password or None to generate one, where it came from)."""
        if o["password_stdin"]:
            stdin = o.get("stdin") or sys.stdin
            password = stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("--password-stdin: standard input held no password")
            return password, "from standard input"
        if password := os.environ.get(PASSWORD_ENV):
            return password, f"from ${PASSWORD_ENV}"
        return None, ""

    def _print(self, result: StaffResult, source: str) -> None:
        user = result.user
        role = result.role or "no role group"
        if result.created:
            self.stdout.write(f"staff user {user.username} created: {role}; log in at /admin/")
        else:
            self.stdout.write(f"new password set for {user.username} ({role})")
        if result.generated_password:
            # The only time it is shown: nothing stores it in clear.
            self.stdout.write(f"password (shown once): {result.generated_password}")
        else:
            self.stdout.write(f"password: {source} (not shown)")
