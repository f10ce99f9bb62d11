"""`make run`'s start-up checks (bin/run), run for real but in a scratch directory: nothing of the project starts.

The whole first hour (start, README commands, Ctrl-C, restart) is .ci/first-hour, run by CI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from core.leases import lease_holder_id
from core.models import JobLease, Store
from tests.deploy.conftest import ROOT
from tests.processes import dead_pid


def scratch_run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """bin/run in a directory with the venv and nothing else: had a check failed to stop it, it would stop there."""
    (tmp_path / "bin").mkdir()
    shutil.copy(ROOT / "bin/run", tmp_path / "bin/run")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return subprocess.run(["bash", str(tmp_path / "bin/run")], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_busy_web_port_is_named_with_its_holder_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = scratch_run(tmp_path, {"WEB_PORT": str(port)})

    assert result.returncode == 1
    holder = "python" if shutil.which("ss") else "another process"  # ss names the process when it can
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"port {port} is in use by {holder}"), line
    if shutil.which("ss"):
        assert f"pid {os.getpid()}" in line
    suggested = int(re.search(r"`WEB_PORT=(\d+) make run`", line).group(1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", suggested))  # the port it suggests is free
    assert sorted(p.name for p in tmp_path.iterdir()) == [".venv", "bin"]  # not even a .env was written


@pytest.mark.django_db
def test_release_local_holds_frees_only_leases_of_processes_of_this_host_that_are_gone():
    me = lease_holder_id()
    host, _, namespace = me.split(":")
    until = timezone.now() + timedelta(seconds=110)
    JobLease.objects.create(name="pull_feeds", holder=f"{host}:{dead_pid()}:{namespace}", held_until=until)
    JobLease.objects.create(name="dispatch_orders", holder=f"{host}:{os.getppid()}:{namespace}", held_until=until)
    JobLease.objects.create(name="pull-store:1", holder=f"other-host:{dead_pid()}:{namespace}", held_until=until)
    out = StringIO()

    call_command("release_local_holds", stdout=out)

    held = dict(JobLease.objects.values_list("name", "holder"))
    assert held["pull_feeds"] == ""  # its process is gone: nobody can be using it
    assert held["dispatch_orders"].startswith(f"{host}:{os.getppid()}:")  # alive
    assert held["pull-store:1"].startswith("other-host:")  # another machine's pid says nothing here
    assert out.getvalue() == "Released 1 job lease(s) of stopped processes: pull_feeds\n"


@pytest.mark.django_db
def test_hub_bootstrap_disables_the_sandbox_store_while_a_real_one_is_enabled_and_names_it():
    sandbox = Store.objects.create(name="sandbox", account="sandbox", app_key="k", app_token="t",
                                   base_url="http://127.0.0.1:8765")
    real = Store.objects.create(name="mystore", account="myaccount", app_key="k", app_token="t")
    out, err = StringIO(), StringIO()

    call_command("hub_bootstrap", "--sandbox-store-follows", stdout=out, stderr=err)

    sandbox.refresh_from_db()
    assert out.getvalue() == "mystore\n"
    assert not sandbox.enabled and "Disabled the store 'sandbox'" in err.getvalue()

    real.enabled = False
    real.save()
    out = StringIO()
    call_command("hub_bootstrap", "--sandbox-store-follows", stdout=out, stderr=StringIO())

    sandbox.refresh_from_db()
    assert out.getvalue() == "" and sandbox.enabled  # back to the demo: the sandbox runs again
