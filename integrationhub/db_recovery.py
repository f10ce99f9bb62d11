"""Going on after the database went away (a PostgreSQL restart, a connection killed by pg_terminate_backend).

Django reconnects on the next query once the broken connection is closed; a long-running loop (a feed reader,
the dispatcher, `sync`) that catches the error, closes its thread's connections and goes on recovers by itself.
What was written before the error is committed or not as a whole (each step is one transaction), so going on
is safe: the next pass reads the database again.
"""

from __future__ import annotations

import logging
import time

from django.db import connections

log = logging.getLogger("hub.db")

RETRY_SECONDS = 0.5  # after a lost connection, before the next query


def database_lost(errors: list[str] | None, where: str, exc: Exception) -> None:
    """Note the error (in `errors`, when the caller reports them) and drop this thread's connections."""
    log.warning("%s: database error, reconnecting: %s", where, exc)
    if errors is not None:
        errors.append(f"{where}: database unavailable ({type(exc).__name__})")
    connections.close_all()
    time.sleep(RETRY_SECONDS)
