"""A request budget per VTEX account, shared by every process and machine through the database.

VTEX's number (../shared/vtex/ORDERS-API.md §6.3, from the Orders API reference): "6000 req/min per account for
Get order, Get by order group, List orders"; the other routes' limits "vary throughout the day and are not
disclosed". The hub holds the calls of those routes it makes (LIMITED_OPERATIONS) to one account to
HUB_VTEX_REQUESTS_PER_MINUTE (default 6000); the others (the feed, start-handling, configuration) have no
published number, so a 429 on them pauses the account instead (store_pause).

How it holds across processes: one VtexRateLimit row per account is a token bucket, refilled by the database's
clock. A process reserves a batch of tokens (a tenth of a second of the rate) in one UPDATE … RETURNING and hands
them to its threads under a lock. The bucket may go into debt: the answer says when the batch becomes usable, and
the process sleeps until then, so waiting costs no queries and takers are served in the order they asked. Tokens
not spent within TOKEN_LIFETIME_SECONDS of becoming usable are dropped, never given back. The bucket holds
BURST_SECONDS of the rate and refills slightly slower than the limit, so that the burst plus what the lifetime
lets a process spend late still fits: no 60 s window carries more than the limit, whatever the number of
processes (Budget.window_bound). A batch that would be usable only after HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS is
not reserved: the call raises VtexUnavailable, which callers retry like a 429. The bucket also carries the
account's 429 pause (store_pause), so every process stops within one batch's lifetime.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import Error as DatabaseFailure
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.models import Store, VtexRateLimit
from core.vtex.client import VtexUnavailable, host_of

DEFAULT_REQUESTS_PER_MINUTE = 6000  # VTEX's documented per-account figure (see above)
# The routes it is documented for, by core.vtex.client.call_operation's names (Get by order group: not used).
LIMITED_OPERATIONS = frozenset({"get_order", "list_orders"})
REFUSED_CODE = "rate_limit"  # VtexUnavailable.code of a call the limiter refused: it never reached VTEX
DEFAULT_MAX_WAIT_SECONDS = 10.0
BATCH_SECONDS = 0.1  # a process takes this much of the rate at once: one query per ~10 calls at full speed
BURST_SECONDS = 1.0  # the bucket's size
TOKEN_LIFETIME_SECONDS = 0.25  # a process cannot sit on tokens and spend them later in a burst
BUSY_SECONDS = 0.002  # another process holds the bucket's row at this instant
DEADLINE_SLACK_SECONDS = 0.05  # a batch reserved within the deadline is kept if the query took a moment
KEY_MAX = 300  # VtexRateLimit.account_key's max_length


def account_key(store: Store) -> str:
    """What VTEX counts requests by: the account name, at the API host the store calls."""
    return f"{store.account.strip().lower()}@{host_of(store.vtex_base_url)}"[:KEY_MAX]


@dataclass(frozen=True)
class Budget:
    """The limit in numbers. Below one request a second the bucket could not hold a whole token: 60 is the floor."""

    per_minute: float

    @classmethod
    def from_settings(cls) -> Budget:
        return cls(max(60.0, float(getattr(settings, "HUB_VTEX_REQUESTS_PER_MINUTE", DEFAULT_REQUESTS_PER_MINUTE))))

    @property
    def burst(self) -> float:
        return self.per_minute / 60 * BURST_SECONDS

    @property
    def refill_per_second(self) -> float:
        # Room for the full bucket at the start, and for tokens spent TOKEN_LIFETIME_SECONDS after they became
        # usable: together they fit in 60 s at exactly per_minute.
        return (self.per_minute - self.burst) / (60 + TOKEN_LIFETIME_SECONDS)

    @property
    def batch(self) -> int:
        return max(1, min(int(self.burst), int(self.per_minute / 60 * BATCH_SECONDS)))

    def window_bound(self, seconds: float) -> int:
        """The most requests any window of `seconds` can carry, all processes together; 60 s gives per_minute."""
        return math.floor(self.burst + self.refill_per_second * (seconds + TOKEN_LIFETIME_SECONDS) + 1e-6)


@dataclass(frozen=True)
class Take:
    granted: int  # 0: paused, or the batch would come later than the caller can wait
    available: float  # tokens in the bucket before this take (negative: debt of earlier takers)
    paused_for: float  # seconds left of the account's 429 pause (<= 0: none)

    def wait(self, budget: Budget) -> float:
        """Seconds until the granted batch is usable (or, when none was granted, until one would be)."""
        return max(0.0, (self.granted or budget.batch) - self.available) / budget.refill_per_second


TABLE = VtexRateLimit._meta.db_table
# One round trip. SKIP LOCKED: a row held by a stuck transaction makes callers retry until their maximum wait
# instead of blocking forever. statement_timestamp(): fresh for each statement, even inside a transaction.
TAKE_SQL = f"""
WITH bucket AS (
    SELECT account_key, paused_until, statement_timestamp() AS at,
           LEAST(%(burst)s, tokens + %(rate)s
                 * GREATEST(0.0, EXTRACT(EPOCH FROM statement_timestamp() - refilled_at)::float8)) AS available
    FROM {TABLE} WHERE account_key = %(key)s
    FOR UPDATE SKIP LOCKED
), taken AS (
    SELECT *, CASE WHEN paused_until > at THEN 0
                   WHEN available - %(want)s >= -%(rate)s * %(max_wait)s THEN %(want)s
                   ELSE 0 END AS granted
    FROM bucket
)
UPDATE {TABLE} AS b SET tokens = taken.available - taken.granted, refilled_at = GREATEST(b.refilled_at, taken.at)
FROM taken WHERE b.account_key = taken.account_key
RETURNING taken.granted::int, taken.available::float8,
          COALESCE(EXTRACT(EPOCH FROM taken.paused_until - taken.at)::float8, 0.0)
"""
CREATE_SQL = (f"INSERT INTO {TABLE} (account_key, tokens, refilled_at) VALUES (%s, %s, statement_timestamp()) "
              "ON CONFLICT DO NOTHING")


def _take_postgresql(key: str, budget: Budget, want: int, max_wait: float) -> Take | None:
    """None: the row was just created, or another process holds it this instant; ask again."""
    with connection.cursor() as cursor:
        cursor.execute(TAKE_SQL, {"key": key, "burst": budget.burst, "rate": budget.refill_per_second, "want": want,
                                  "max_wait": max_wait})
        row = cursor.fetchone()
        if row is None:
            cursor.execute(CREATE_SQL, [key, budget.burst])
            return None
    return Take(granted=row[0], available=row[1], paused_for=row[2])


def _take_portable(key: str, budget: Budget, want: int, max_wait: float) -> Take:
    """The same bucket for other databases (SQLite: one file on one machine, writers serialized)."""
    now = timezone.now()
    with transaction.atomic():
        bucket, _ = VtexRateLimit.objects.select_for_update().get_or_create(
            account_key=key, defaults={"tokens": budget.burst, "refilled_at": now})
        elapsed = max(0.0, (now - bucket.refilled_at).total_seconds())
        available = min(budget.burst, bucket.tokens + budget.refill_per_second * elapsed)
        paused_for = (bucket.paused_until - now).total_seconds() if bucket.paused_until else 0.0
        granted = want if paused_for <= 0 and available - want >= -budget.refill_per_second * max_wait else 0
        bucket.tokens, bucket.refilled_at = available - granted, max(bucket.refilled_at, now)
        bucket.save(update_fields=["tokens", "refilled_at"])
    return Take(granted=granted, available=available, paused_for=paused_for)


def tokens_take(*, key: str, budget: Budget, want: int, max_wait: float) -> Take | None:
    """Reserve `want` tokens if they are usable within `max_wait` s. A database failure refuses the call."""
    try:
        if connection.vendor == "postgresql":
            return _take_postgresql(key, budget, want, max_wait)
        return _take_portable(key, budget, want, max_wait)
    except DatabaseFailure as exc:  # InterfaceError too: a connection the server closed
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()  # so the next call reconnects after a restart
        raise VtexUnavailable(f"VTEX rate limit of {key}: the database that shares it is unavailable ({exc})".strip(),
                              code=REFUSED_CODE) from exc


def account_pause(*, key: str, until: datetime) -> None:
    """Put a 429 pause in the account's bucket, where every process's limiter reads it with its next batch."""
    VtexRateLimit.objects.get_or_create(account_key=key, defaults={"tokens": 0.0, "refilled_at": timezone.now()})
    later = Q(paused_until__isnull=True) | Q(paused_until__lt=until)
    VtexRateLimit.objects.filter(later, account_key=key).update(paused_until=until)
    limiter = _limiters.get(key)
    if limiter is not None:  # this process's other threads stop now, not after their batch
        limiter.pause_here(max(0.0, (until - timezone.now()).total_seconds()))


class AccountLimiter:
    """One account's budget in this process: batches taken from the shared bucket, spent by this process's threads.

    Called as VtexClient's `before_call`: returns when the request may go, or raises VtexUnavailable.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.reset()

    def reset(self) -> None:
        """No tokens, no pause, a fresh lock: after a fork, the parent's are not this process's."""
        self._lock = threading.Lock()
        self._tokens = 0
        self._usable_from = 0.0  # time.monotonic(): the batch in hand was reserved for then
        self._expires = 0.0  # time.monotonic(): and is dropped then
        self._paused_until = 0.0  # time.monotonic(): the account's 429 pause, as last seen

    def pause_here(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._tokens = 0

    def __call__(self, operation: str = "get_order") -> None:
        if operation not in LIMITED_OPERATIONS:
            return
        max_wait = float(getattr(settings, "HUB_VTEX_RATE_LIMIT_MAX_WAIT_SECONDS", DEFAULT_MAX_WAIT_SECONDS))
        deadline = time.monotonic() + max_wait
        # Threads queue on the lock; whoever holds it reserves the next batch for the others.
        if not self._lock.acquire(timeout=max_wait):
            raise self._refused(max_wait)
        try:
            while wait := self._slot_or_wait(deadline):
                if time.monotonic() + wait > deadline + DEADLINE_SLACK_SECONDS:
                    raise self._refused(max_wait)
                time.sleep(wait)
        finally:
            self._lock.release()

    def _slot_or_wait(self, deadline: float) -> float:
        """Take a slot (0.0), or say how long to wait before asking again. Call with the lock held."""
        now = time.monotonic()
        if now < self._paused_until:
            return self._paused_until - now
        if not (self._tokens and now < self._expires):
            if wait := self._reserve(now, deadline):
                return wait
            now = time.monotonic()
        if now < self._usable_from:
            return self._usable_from - now
        self._tokens -= 1
        return 0.0

    def _reserve(self, sent: float, deadline: float) -> float:
        """Reserve the next batch: 0.0 once in hand (perhaps usable only later), else how long to wait."""
        budget = Budget.from_settings()
        take = tokens_take(key=self.key, budget=budget, want=budget.batch, max_wait=deadline - sent)
        received = time.monotonic()
        if take is None:
            return BUSY_SECONDS * random.uniform(1.0, 2.0)
        if take.paused_for > 0:
            self.pause_here(take.paused_for)
            return take.paused_for
        if not take.granted:
            return take.wait(budget)  # later than the deadline: the caller refuses the call
        # The database's moment lies between sent and received: usable no earlier, dropped no later.
        self._tokens = take.granted
        self._usable_from = received + take.wait(budget)
        self._expires = sent + take.wait(budget) + TOKEN_LIFETIME_SECONDS
        return 0.0

    def _refused(self, max_wait: float) -> VtexUnavailable:
        paused_for = self._paused_until - time.monotonic()
        if paused_for > 0:
            return VtexUnavailable(f"VTEX answered 429 to account {self.key}: no call for another {paused_for:.0f}s",
                                   code=REFUSED_CODE, retry_after=paused_for)
        return VtexUnavailable(
            f"no VTEX request slot for account {self.key} within {max_wait:g}s "
            f"(HUB_VTEX_REQUESTS_PER_MINUTE {Budget.from_settings().per_minute:g}, shared by every process)",
            code=REFUSED_CODE)


_limiters: dict[str, AccountLimiter] = {}
_limiters_lock = threading.Lock()


def account_limiter(store: Store) -> AccountLimiter:
    """This process's limiter for the store's account: stores of one account share it (and its bucket)."""
    key = account_key(store)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = AccountLimiter(key)
    return limiter


def _after_fork() -> None:
    """`sync`'s reader and django-q2's workers are forked: they must not spend the parent's tokens or inherit a
    lock some other thread of the parent held."""
    global _limiters_lock
    _limiters_lock = threading.Lock()
    for limiter in _limiters.values():
        limiter.reset()


os.register_at_fork(after_in_child=_after_fork)
