"""The feeds app's admin, one module per page family; importing them registers the ModelAdmins."""

from feeds.admin import events, feed_config, jobs, stores  # noqa: F401
