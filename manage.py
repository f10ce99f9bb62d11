#!/usr/bin/env python
import os
import re
import sys

NOT_MIGRATED = "the database is not migrated: run `.venv/bin/python manage.py migrate`"
# SQLite says "no such table: x", PostgreSQL 'relation "x" does not exist': both mean migrate never ran.
MISSING_TABLE = re.compile(r"no such table|relation \S+ does not exist")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError, ProgrammingError

    try:
        execute_from_command_line(sys.argv)
    except (OperationalError, ProgrammingError) as exc:
        # One place for every command: a fresh clone's first mistake deserves one line, not a traceback.
        if not MISSING_TABLE.search(str(exc)) or sys.argv[1:2] == ["migrate"]:
            raise  # inside migrate, a missing table is a migration's own bug: show it whole
        print(NOT_MIGRATED, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
