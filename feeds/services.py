"""Feed reading: VTEX client -> stored events (with the order work they imply) -> committed handles."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from core.leases import lease_acquire, lease_release, store_pull_lease
from core.models import Store
from core.vtex.client import FeedItem, VtexClient, VtexError, VtexUnavailable
from core.vtex_account import store_pause, vtex_client
from feeds.handles import DEFAULT_VISIBILITY_SECONDS, commit_margin, events_live, visibility_of
from feeds.models import FeedConfig, FeedEvent
from integrationhub.db_recovery import database_lost

log = logging.getLogger("hub.feeds")
MAXLOT = 10
COMMIT_RETRY_FIRST_SECONDS = 0.2
COMMIT_RETRY_MAX_SECONDS = 30.0
COMMIT_TRIES_UNREACHABLE = 3  # refused, DNS, TLS: seldom fixed within seconds, and the next pull retries
# A feed answering 404 is read again after 30 s, then 1, 2, 4, 8 min, then every 10 min, until it answers.
FEED_RETRY_FIRST_SECONDS = 30
FEED_RETRY_MAX_SECONDS = 600
VTEX_LOG_LINES = 30
LEASE_LOOK_SECONDS = 5.0  # how often the polling job looks for a feed whose reader went away


# What to check, by what went wrong. The flags are connect_store's.
ADVICE = {
    "refused": "nothing answers there: check --base-url / the account name",
    "dns": "check --base-url / the account name (and this machine's DNS)",
    "tls": "check --base-url (https to a plain-http server?) and REQUESTS_CA_BUNDLE",
    "connect_timeout": "check --base-url, and that this machine may reach it (firewall, HTTPS_PROXY)",
    "unreachable": "check --base-url, and this machine's network (firewall, HTTPS_PROXY)",
    401: "check the app key and token (connect_store --app-key / --app-token) and the appKey's role",
    403: "the credentials are valid but not allowed: check the appKey's role (it must read orders and the feed)",
    404: "save the feed filter under Feed configs in the admin (it creates the feed on VTEX), "
         "or check --base-url / the account name",
}
HTTP_CAUSES = {401: "HTTP 401, VTEX refused the credentials", 403: "HTTP 403, the appKey may not read the feed",
               404: "HTTP 404, feed not configured"}


@dataclass(frozen=True)
class FeedProblem:
    """Why a store's feed could not be read, for a person: where, why, and what to check."""

    store_id: int
    store: str
    host: str
    cause: str
    advice: str
    connection: bool  # no connection at all (refused, DNS, TLS, connect timeout): no HTTP answer

    def line(self) -> str:
        return f"{self.store}: cannot read the feed at {self.host}: {self.cause} — {self.advice}"


def feed_problem(*, store: Store, exc: VtexError) -> FeedProblem | None:
    """A problem worth explaining (no connection, any 4xx); None for the ones retried quietly (5xx, 429, timeouts)."""
    if isinstance(exc, VtexUnavailable):
        if not exc.unreachable:
            return None
        return FeedProblem(store_id=store.pk, store=store.name, host=exc.host, cause=exc.cause,
                           advice=ADVICE[exc.failure], connection=True)
    return FeedProblem(store_id=store.pk, store=store.name, host=exc.host,
                       cause=HTTP_CAUSES.get(exc.status or 0, f"HTTP {exc.status} {exc.code}".strip()),
                       advice=ADVICE.get(exc.status or 0, "check --base-url / the account name"), connection=False)


@dataclass(frozen=True)
class BusyFeed:
    """A feed another process was reading: `holder` says which."""

    store: str
    holder: str
    text: str


@dataclass
class PullReport:
    read: int = 0
    queued: int = 0
    ignored: int = 0
    duplicates: int = 0
    malformed: int = 0
    failed: int = 0
    committed: int = 0
    commit_retries: int = 0  # failed commits tried again while their handles were live
    errors: list[str] = field(default_factory=list)
    stores_busy: int = 0  # stores another process was already reading
    blocked: list[str] = field(default_factory=list)  # feeds that cannot be read until staff act
    problems: list[FeedProblem] = field(default_factory=list)  # why a feed was not read, explained
    answered: list[int] = field(default_factory=list)  # stores whose VTEX gave any HTTP answer to the feed
    busy: list[BusyFeed] = field(default_factory=list)  # who reads the feeds we could not
    notes: list[str] = field(default_factory=list)  # worth telling the person running `sync`

    def add(self, outcome: str) -> None:
        attr = {"queued": "queued", "ignored": "ignored", "duplicate": "duplicates",
                "malformed": "malformed", "failed": "failed"}[outcome]
        setattr(self, attr, getattr(self, attr) + 1)

    def merge(self, other: PullReport) -> None:
        for name in ("read", "queued", "ignored", "duplicates", "malformed", "failed", "committed", "commit_retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors
        self.blocked += other.blocked
        self.problems += other.problems
        self.answered += other.answered
        self.busy += other.busy
        self.notes += other.notes

    def summary(self) -> str:
        text = (f"pulled {self.read} event(s): {self.queued} queued, {self.ignored} ignored, "
                f"{self.duplicates} duplicate, {self.malformed} malformed, {self.failed} failed; "
                f"{self.committed} committed")
        text += f" ({self.commit_retries} commit retries)" if self.commit_retries else ""
        return text + (f"; errors: {'; '.join(self.errors[-3:])}" if self.errors else "")


def _json_safe(raw: Any) -> Any:
    try:
        json.dumps(raw)
        return raw
    except (TypeError, ValueError):
        return repr(raw)


def _dedup_keys(item: FeedItem) -> list[tuple]:
    """The two ways VTEX repeats an event: the same eventId, or the same change under a new eventId."""
    keys: list[tuple] = []
    if item.event_id:
        keys.append(("id", item.event_id))
    if item.current_change:
        keys.append(("change", item.order_id, item.state, item.current_change))
    return keys


def _originals(store: Store, items: list[FeedItem]) -> dict[tuple, FeedEvent]:
    """First sightings already stored for any item of the batch, by dedup key (one query)."""
    match = Q()
    for item in items:
        if item.event_id:
            match |= Q(event_id=item.event_id)
        if item.current_change:
            match |= Q(order_id=item.order_id, state=item.state, current_change=item.current_change)
    if not match:
        return {}
    found: dict[tuple, FeedEvent] = {}
    rows = (FeedEvent.objects.filter(match, store=store, duplicate_of__isnull=True)
            .exclude(outcome=FeedEvent.Outcome.MALFORMED).only("pk", "event_id", "order_id", "state", "current_change"))
    for event in rows:
        for key in _dedup_keys(FeedItem(raw=None, event_id=event.event_id, order_id=event.order_id,
                                        state=event.state, current_change=event.current_change)):
            found.setdefault(key, event)
    return found


# What a stored event asks of its order: `note(store=, items=)` returns (outcome, error) for each first sighting, in
# order. Registered by orders (OrdersConfig.ready()): feeds never imports orders, yet every event it stores must
# carry the order work it asks for, in the same transaction.
EventWork = Callable[..., list[tuple[str, str]]]
_event_work: EventWork | None = None


def event_work_register(note: EventWork) -> None:
    """Set what records the order work of new events; events_store_batch calls it once per batch."""
    global _event_work
    _event_work = note


def _registered_event_work() -> EventWork:
    if _event_work is None:
        # Storing the event without its order work, then committing it to VTEX, would lose the order for good.
        raise ImproperlyConfigured("no order work is registered for feed events (orders.apps.OrdersConfig.ready "
                                   "registers it): is `orders` in INSTALLED_APPS?")
    return _event_work


def events_store_batch(*, store: Store, items: list[FeedItem], source: str = FeedEvent.Source.FEED) -> list[FeedEvent]:
    """Store a batch in one transaction (every item or none) and note the order work it asks for.

    Repeats are stored too, pointing at their first sighting, and do nothing. The store row is locked
    for the transaction, so two readers of one feed (or feed and hook) cannot both take an event as new.
    """
    work = _registered_event_work()  # before anything is written
    with transaction.atomic():
        Store.objects.select_for_update().filter(pk=store.pk).values_list("pk", flat=True).first()
        seen = _originals(store, [item for item in items if not item.problem])
        events: list[FeedEvent] = []
        firsts: list[tuple[FeedEvent, FeedItem]] = []
        repeats: list[tuple[FeedEvent, tuple]] = []
        for item in items:
            event = FeedEvent(store=store, source=source, handle=item.handle, event_id=item.event_id,
                              order_id=item.order_id, state=item.state, last_state=item.last_state,
                              domain=item.domain, last_change=item.last_change, current_change=item.current_change,
                              payload=_json_safe(item.raw))
            events.append(event)
            if item.problem:
                event.outcome, event.error = FeedEvent.Outcome.MALFORMED, item.problem
                continue
            keys = _dedup_keys(item)
            known = next((key for key in keys if key in seen), None)
            if known is not None:
                event.outcome = FeedEvent.Outcome.DUPLICATE
                repeats.append((event, known))
                continue
            firsts.append((event, item))
            for key in keys:
                seen[key] = event
        # One call for the lot: a run of ready-for-handling events is noted in a few queries, not a few each.
        noted = work(store=store, items=[item for _, item in firsts])
        for (event, _), (outcome, error) in zip(firsts, noted, strict=True):
            event.outcome, event.error = outcome, error
        # First sightings first, so that repeats within this very batch can point at them.
        FeedEvent.objects.bulk_create([event for event in events if event.outcome != FeedEvent.Outcome.DUPLICATE])
        for event, key in repeats:
            event.duplicate_of = seen[key]
        FeedEvent.objects.bulk_create([event for event, _ in repeats])
    return events


def _store_health(store: Store, **fields: Any) -> None:
    Store.objects.filter(pk=store.pk).update(**fields)
    for name, value in fields.items():
        setattr(store, name, value)


def handles_commit(*, store: Store, client: VtexClient, handles: list[str], live_until: float, deadline: float,
                   report: PullReport, stopping: Callable[[], bool] | None = None) -> VtexError | None:
    """Commit `handles`, retrying 429, 5xx and timeouts with backoff until `live_until` or `deadline` (monotonic).

    Returns None once committed, else the last error. Past `live_until` the handles are dead: VTEX shows the
    items again after the visibility timeout and their new handles are committed as duplicates. When
    `stopping()`, no retry; with no connection at all, a few: the next pull commits the stored handles that still
    live (a wrong URL must not hold `sync` for the handles' whole life).
    """
    delay = COMMIT_RETRY_FIRST_SECONDS
    unreachable = 0
    while True:
        try:
            client.feed_commit(handles)
            return None
        except VtexUnavailable as exc:
            error = exc
            unreachable = unreachable + 1 if exc.unreachable else 0
            if exc.rate_limited:
                store_pause(store_id=store.pk, retry_after=exc.retry_after)
        except VtexError as exc:
            return exc  # any other 4xx: the same call would get the same answer
        # Jitter, so that readers whose commits failed together do not retry together.
        wait = max(delay * random.uniform(0.5, 1.0), _seconds_paused(store))
        if (time.monotonic() + wait >= min(live_until, deadline) or (stopping is not None and stopping())
                or unreachable >= COMMIT_TRIES_UNREACHABLE):
            return error
        log.info("commit of %d handle(s) failed (%s); again in %.1fs", len(handles), error, wait)
        report.commit_retries += 1
        time.sleep(wait)
        delay = min(2 * delay, COMMIT_RETRY_MAX_SECONDS)


def _commit_failed(store: Store, report: PullReport, message: str) -> None:
    _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=message[:1000])
    report.errors.append(message)


def feed_read_once(*, store: Store, client: VtexClient, report: PullReport,
                   visibility: int = DEFAULT_VISIBILITY_SECONDS, deadline: float | None = None,
                   stopping: Callable[[], bool] | None = None) -> str:
    """Read one lot, store it, commit its handles. Returns "items", "empty" or "error".

    `visibility`: the feed's visibility timeout (how long the handles live); `deadline`: monotonic, for retries.
    """
    read_at = time.monotonic()  # VTEX starts the visibility timeout when it answers, a little later
    try:
        items = client.feed_read(MAXLOT)
    except VtexError as exc:
        if (problem := feed_problem(store=store, exc=exc)) is not None:
            report.problems.append(problem)
        if exc.status is not None:
            report.answered.append(store.pk)
        if not isinstance(exc, VtexUnavailable):
            return _feed_refused(store, report, exc)
        if exc.rate_limited:
            store_pause(store_id=store.pk, retry_after=exc.retry_after)
        _store_health(store, feed_status=Store.FeedStatus.FAILING, feed_error=str(exc)[:1000])
        report.errors.append(str(exc))
        return "error"
    report.answered.append(store.pk)
    if not items:
        _store_health(store, **_feed_answered())
        return "empty"
    events = events_store_batch(store=store, items=items)
    report.read += len(items)
    for event in events:
        report.add(event.outcome)
    # Every stored item is committed, ignored and duplicate ones too: uncommitted items block the feed.
    handles = [event.handle for event in events if event.handle]
    if handles:
        live_until = read_at + visibility - commit_margin(visibility)
        error = handles_commit(store=store, client=client, handles=handles, live_until=live_until,
                               deadline=live_until if deadline is None else deadline, report=report,
                               stopping=stopping)
        if error is not None:
            # Stored but not committed: the next pull retries while the handles live (events_commit_stored),
            # then VTEX shows the items again and they are stored as duplicates.
            _commit_failed(store, report, f"commit failed: {error}")
            return "error"
    FeedEvent.objects.filter(pk__in=[event.pk for event in events if event.handle]).update(committed_at=timezone.now())
    report.committed += len(handles)
    _store_health(store, **_feed_answered())
    return "items"


def _feed_answered() -> dict[str, Any]:
    """The store's health after a feed read that succeeded: any 404 backoff ends."""
    return {"feed_status": Store.FeedStatus.OK, "feed_error": "", "last_pull_at": timezone.now(),
            "feed_retry_at": None, "feed_retry_seconds": 0}


def _feed_refused(store: Store, report: PullReport, exc: VtexError) -> str:
    """A 4xx on the feed: recorded for staff, and the feed is blocked (the same call gets the same answer)."""
    status = {404: Store.FeedStatus.NOT_CONFIGURED, 401: Store.FeedStatus.UNAUTHORIZED,
              403: Store.FeedStatus.UNAUTHORIZED}.get(exc.status or 0, Store.FeedStatus.FAILING)
    message = "the feed is not configured on VTEX for this appKey" if exc.status == 404 else str(exc)
    if exc.status == 404:
        feed_backoff_start(store=store)
        feed_not_found(store=store, message=message)  # before _store_health: it looks at the previous status
    _store_health(store, feed_status=status, feed_error=message[:1000])
    report.errors.append(message)
    report.blocked.append(f"{store.name}: {message}")
    return "error"


def feed_backoff_start(*, store: Store) -> int:
    """A 404 feed: the polling job waits before reading it again, twice as long each time. Returns the wait.

    Several readers of one feed get the 404 together: only the first one past the last wait doubles it.
    """
    now = timezone.now()
    with transaction.atomic():
        row = (Store.objects.select_for_update().filter(pk=store.pk)
               .values_list("feed_retry_at", "feed_retry_seconds").first())
        if row is None:
            return 0
        retry_at, seconds = row
        if retry_at is None or retry_at <= now:
            seconds = FEED_RETRY_FIRST_SECONDS if not seconds else min(2 * seconds, FEED_RETRY_MAX_SECONDS)
            retry_at = now + timedelta(seconds=seconds)
            Store.objects.filter(pk=store.pk).update(feed_retry_at=retry_at, feed_retry_seconds=seconds)
            log.info("store %s: the feed answered 404; next read in %d s", store.name, seconds)
    store.feed_retry_at, store.feed_retry_seconds = retry_at, seconds
    return seconds


def feed_backoff_clear(*, store_id: int) -> None:
    """Read the feed at once again (its configuration was just pushed)."""
    Store.objects.filter(pk=store_id).update(feed_retry_at=None, feed_retry_seconds=0)


def feed_known_to_vtex(*, last_pull_at: datetime | None, config: FeedConfig | None) -> bool:
    """Whether VTEX had this store's feed once: the hub read it, or VTEX accepted the hub's push.

    So a 404 means VTEX removed it, rather than that nobody has configured it yet.
    """
    return last_pull_at is not None or (config is not None and bool(config.push_accepted))


def feed_was_configured(*, store_id: int) -> bool:
    """feed_known_to_vtex, read from the database."""
    last_pull_at = Store.objects.filter(pk=store_id).values_list("last_pull_at", flat=True).first()
    return feed_known_to_vtex(last_pull_at=last_pull_at, config=FeedConfig.objects.filter(store_id=store_id).first())


def feed_not_found(*, store: Store, message: str) -> bool:
    """Mark the store's feed as missing on VTEX; the first time (True) the detection is logged and noted.

    A feed VTEX had and now answers 404 for was removed (VTEX deletes a feed that sees no event for its
    whole retention): with HUB_AUTO_REAPPLY_CONFIG on, the hub's copy is pushed again by a queued job.
    """
    first = (Store.objects.filter(pk=store.pk).exclude(feed_status=Store.FeedStatus.NOT_CONFIGURED)
             .update(feed_status=Store.FeedStatus.NOT_CONFIGURED, feed_error=message[:1000]) == 1)
    if not first:
        return False
    removed = feed_was_configured(store_id=store.pk)
    text = ("feed configuration missing on VTEX (a feed read answered 404): VTEX removed it" if removed
            else "no feed configuration on VTEX (a feed read answered 404): save the feed config to push it")
    log.warning("store %s: %s", store.name, text)
    vtex_log_add(store_id=store.pk, text=text)
    if removed and getattr(settings, "HUB_AUTO_REAPPLY_CONFIG", False):
        async_task("feeds.tasks.reapply_config", store.pk, "feed", task_name=f"re-apply feed of {store.name}")
    return True


def vtex_log_add(*, store_id: int, text: str) -> None:
    """One line on top of the FeedConfig's timeline of VTEX-side events (removals, re-applies)."""
    stamp = timezone.localtime(timezone.now())
    line = f"{stamp:%Y-%m-%d %H:%M:%S} {stamp.tzname()} {text}".replace("\n", " ")
    with transaction.atomic():
        config = FeedConfig.objects.select_for_update().filter(store_id=store_id).only("pk", "vtex_log").first()
        if config is not None:
            lines = [line, *config.vtex_log.splitlines()][:VTEX_LOG_LINES]
            FeedConfig.objects.filter(pk=config.pk).update(vtex_log="\n".join(lines))


def events_commit_stored(*, store: Store, client: VtexClient, visibility: int, before: datetime, deadline: float,
                         report: PullReport, stopping: Callable[[], bool] | None = None) -> None:
    """Commit the live handles that an earlier pull stored but did not commit (it crashed or ran out of time).

    Only events stored before `before`, when this pull began: its own readers commit theirs.
    """
    now, start = timezone.now(), time.monotonic()
    rows = list(events_live(store_id=store.pk, visibility=visibility, now=now).filter(received_at__lt=before)
                .order_by("received_at", "pk").values_list("pk", "handle", "received_at"))
    failed: VtexError | None = None
    for first in range(0, len(rows), MAXLOT):
        lot = rows[first:first + MAXLOT]
        # The oldest handle of the lot dies first.
        live_until = start + (lot[0][2] - now).total_seconds() + visibility - commit_margin(visibility)
        error = handles_commit(store=store, client=client, handles=[handle for _, handle, _ in lot],
                               live_until=live_until, deadline=deadline, report=report, stopping=stopping)
        if error is not None:
            failed = error
            continue  # younger lots may still be live
        FeedEvent.objects.filter(pk__in=[pk for pk, _, _ in lot]).update(committed_at=timezone.now())
        report.committed += len(lot)
    if failed is not None:
        _commit_failed(store, report, f"commit of stored handles failed: {failed}")
    elif rows:
        log.info("committed %d handle(s) stored by an earlier pull of %s", len(rows), store.name)


def _seconds_paused(store: Store) -> float:
    """A 429 seen by any worker (feed or dispatch) pauses the whole account."""
    until = Store.objects.filter(pk=store.pk).values_list("vtex_paused_until", flat=True).first()
    return max(0.0, (until - timezone.now()).total_seconds()) if until else 0.0


def _seconds_to_retry(store: Store) -> float:
    """How long a 404 feed waits before the polling job reads it again (feed_backoff_start)."""
    until = Store.objects.filter(pk=store.pk).values_list("feed_retry_at", flat=True).first()
    return max(0.0, (until - timezone.now()).total_seconds()) if until else 0.0


def feed_read_loop(*, store: Store, deadline: float, until_empty: bool,
                   stored_before: datetime | None = None, stopping: Callable[[], bool] | None = None) -> PullReport:
    """One reader: read, store, commit, again. Several run side by side on one feed, like SQS consumers.

    stored_before: first commit the live handles stored before then and never committed (one reader does).
    stopping: checked between lots; the lot in hand is stored and committed first, so no item stays hidden.
    """
    report = PullReport()
    client = vtex_client(store)
    visibility = visibility_of(FeedConfig.objects.filter(store=store).first())
    try:
        while (left := deadline - time.monotonic()) > 0 and not (stopping is not None and stopping()):
            if paused := _seconds_paused(store):
                if until_empty:
                    break  # `sync` comes back for it in its next round
                time.sleep(min(paused, left))
                continue
            if stored_before is not None:
                try:
                    events_commit_stored(store=store, client=client, visibility=visibility, before=stored_before,
                                         deadline=deadline, report=report, stopping=stopping)
                except DatabaseError as exc:
                    database_lost(report.errors, f"{store.name}: commit of stored events", exc)
                stored_before = None
                continue
            # Only the polling job backs off: `sync` and "Pull now" are a person asking for one read now.
            if not until_empty and (waiting := _seconds_to_retry(store)):
                # Looked at again each poll interval (a database read, not a VTEX call): a re-apply ends it.
                time.sleep(min(waiting, left, settings.HUB_IDLE_POLL_SECONDS))
                continue
            try:
                result = feed_read_once(store=store, client=client, report=report, visibility=visibility,
                                        deadline=deadline, stopping=stopping)
            except DatabaseError as exc:
                # The database went away (a restart, a killed connection): a lot read and not stored comes back
                # after VTEX's visibility timeout. Reconnect and go on reading.
                database_lost(report.errors, f"{store.name}: feed read", exc)
                continue
            if result == "items":
                continue
            if until_empty:
                break
            time.sleep(min(settings.HUB_IDLE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    finally:
        client.close()
        connections.close_all()  # this thread's connection
    return report


def feeds_pull(*, deadline: float, store_ids: Iterable[int] | None = None, until_empty: bool = True,
               readers: int | None = None, stopping: Callable[[], bool] | None = None) -> PullReport:
    """Read every enabled store's feed with HUB_PULL_CONCURRENCY readers each, until `deadline` (monotonic).

    Each feed is read by one process at a time (a lease per store, kept alive by the heartbeat). A feed
    another process reads is left to it; the polling job looks again every few seconds, so it takes the feed
    over within HUB_CLAIM_SECONDS of that process dying.
    until_empty: stop when the feeds answer an empty lot (the `sync` command); otherwise keep polling
    every HUB_IDLE_POLL_SECONDS until the deadline (the scheduled job), so a new event waits seconds,
    not a minute. stopping: a graceful stop; the readers finish their lot, then the leases are released.
    """
    report = PullReport()
    stores = Store.objects.filter(enabled=True)
    if store_ids is not None:
        stores = stores.filter(pk__in=list(store_ids))
    waiting = list(stores)
    leases: list[str] = []
    threads: list[threading.Thread] = []
    results: list[PullReport] = []

    def read(store: Store, n: int, taken_at: datetime) -> None:
        # Reader 0 first commits what an earlier pull left uncommitted: with the lease held, no one else does.
        results.append(feed_read_loop(store=store, deadline=deadline, until_empty=until_empty,
                                      stored_before=taken_at if n == 0 else None, stopping=stopping))

    def take_free(first: bool) -> None:
        for store in list(waiting):
            attempt = lease_acquire(name=store_pull_lease(store.pk))
            holder = attempt.holder.describe() if attempt.holder else "another process"
            if not attempt.taken:
                if first:
                    report.busy.append(BusyFeed(store=store.name, holder=holder.split(" (")[0],
                                                text=f"feed of {store.name} is being read by {holder}"))
                continue
            if attempt.took_over:
                report.notes.append(f"took over the feed of {store.name} from {holder}: that process is gone")
            waiting.remove(store)
            leases.append(store_pull_lease(store.pk))
            taken_at = timezone.now()
            for n in range(max(1, readers or settings.HUB_PULL_CONCURRENCY)):
                thread = threading.Thread(target=read, args=(store, n, taken_at), name=f"pull-{store.name}-{n}",
                                          daemon=True)
                threads.append(thread)
                thread.start()

    take_free(first=True)
    report.stores_busy = len(waiting)
    try:
        # The polling job looks again for feeds whose reader went away; `sync` leaves them to that reader.
        while not until_empty and waiting and not (stopping is not None and stopping()):
            if (left := deadline - time.monotonic()) <= 0:
                break
            _join_for(threads, seconds=min(LEASE_LOOK_SECONDS, left))
            take_free(first=False)
        for thread in threads:
            thread.join()  # each ends by the deadline, or after its lot on a stop
    finally:
        try:
            lease_release(names=leases)
        except DatabaseError as exc:  # the leases lapse on their own within HUB_CLAIM_SECONDS
            database_lost(report.errors, "releasing the feed leases", exc)
    for result in results:
        report.merge(result)
    report.blocked = sorted(set(report.blocked))
    return report


def _join_for(threads: list[threading.Thread], *, seconds: float) -> None:
    """Wait `seconds` (joining, so a reader that ends is collected meanwhile)."""
    until = time.monotonic() + seconds
    for thread in threads:
        thread.join(timeout=max(0.0, until - time.monotonic()))
    time.sleep(max(0.0, until - time.monotonic()))
