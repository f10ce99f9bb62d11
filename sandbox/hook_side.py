"""The sandbox's side of the Order Hook: its configuration, knobs and the notifications it queues.

`HookSide` is mixed into `Sandbox`; `_notify_hook` runs under the sandbox lock and only queues (see
hook_delivery.py for the threads that send).
"""

from __future__ import annotations

import random
import threading
from typing import Any

from sandbox.hook import HookConfig, copy_stored, parse_hook_config
from sandbox.hook_delivery import HookNotifier, Notification
from sandbox.orders import OrderRecord
from sandbox.records import HookDelivery
from sandbox.timestamps import iso_z


class HookSide:
    # Provided by Sandbox.
    _lock: threading.Lock
    _hook: HookConfig | None
    _hooks: HookNotifier
    _hook_rng: random.Random
    account: str
    app_key: str
    hook_drop_rate: float
    hook_delay_ms: float
    hook_duplicate_rate: float

    @property
    def hook_config(self) -> dict[str, Any] | None:
        """The hook configuration as stored (request shape), or None."""
        return copy_stored(self._hook)

    @hook_config.setter
    def hook_config(self, value: dict[str, Any] | None) -> None:
        """Set it without the ping VTEX sends on `POST hook/config`."""
        config = None if value is None else parse_hook_config(value)
        with self._lock:
            self._hook = config

    @property
    def hook_retry_base_seconds(self) -> float:
        """First wait before retrying a failed notification; doubles each try up to a minute."""
        return self._hooks.retry_base_seconds

    @hook_retry_base_seconds.setter
    def hook_retry_base_seconds(self, value: float) -> None:
        self._hooks.retry_base_seconds = float(value)

    @property
    def hook_max_attempts(self) -> int:
        return self._hooks.max_attempts

    @hook_max_attempts.setter
    def hook_max_attempts(self, value: int) -> None:
        self._hooks.max_attempts = int(value)

    @property
    def hook_deliveries(self) -> list[HookDelivery]:
        """Every try to deliver a notification, in the order they ended, plus the dropped ones (attempt 0)."""
        return self._hooks.deliveries

    def wait_for_hooks(self, timeout: float = 10.0) -> bool:
        """Wait until no notification is queued, waiting for a retry or in flight; False on timeout."""
        return self._hooks.wait_idle(timeout)

    def _notify_hook(self, record: OrderRecord, *, state: str, last_state: str, last_change: float,
                     now: float) -> None:
        """Queue VTEX's notification for the delivery threads when the hook's filter matches."""
        hook = self._hook
        if hook is None or not hook.filter.matches(order_id=record.order_id, state=state, doc=record.doc):
            return
        payload = {
            "Domain": "Fulfillment",
            "OrderId": record.order_id,
            "State": state,
            "LastState": last_state,
            "LastChange": iso_z(last_change),
            "CurrentChange": iso_z(now),
            "Origin": {"Account": self.account, "Key": self.app_key},
        }
        rng = self._hook_rng
        # Drawn only when set, like the feed's knobs, so a seed gives the same decisions whatever else is on.
        if self.hook_drop_rate and rng.random() < self.hook_drop_rate:
            self._hooks.record_drop(payload)
            return
        notification = Notification(url=hook.url, headers=dict(hook.headers), payload=payload)
        delay = self.hook_delay_ms / 1000
        self._hooks.submit(notification, delay_seconds=delay)
        if self.hook_duplicate_rate and rng.random() < self.hook_duplicate_rate:
            self._hooks.submit(Notification(url=hook.url, headers=dict(hook.headers), payload=dict(payload),
                                            duplicate=True), delay_seconds=delay)
