"""requests sessions for the VTEX and ERP clients."""

from __future__ import annotations

import os

import requests


def new_session(url: str) -> requests.Session:
    """A session that reads proxy and CA settings from the environment once, at creation.

    With trust_env on, requests re-reads them (and ~/.netrc) on every call, which showed up as a
    large share of the hub's CPU time in the benchmark.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session
