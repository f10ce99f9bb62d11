"""The feeds app's admin, one module per page family; importing them registers the ModelAdmins.

The store and feed configuration pages show orders' figures too: they are registered by orders.admin.
"""

from feeds.admin import events, jobs  # noqa: F401
