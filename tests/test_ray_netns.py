"""Runs the `ray`-marked tests (tests/test_ray.py) in a child pytest inside a fresh network namespace with only
loopback up (`unshare -n`), so that the default `pytest -q` executes them and Ray can reach no address but 127.0.0.1.
Inside such a namespace (or on a machine with loopback only) conftest.py lets the ray tests run directly instead."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, loopback_only

pytestmark = pytest.mark.ray


def _namespace_problem() -> str:
    """Why a private network namespace cannot be made here ('' when it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2) for a private network namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a private network namespace here ({probe.stderr.strip() or 'unshare -n failed'})"
    return ""


def test_ray_suite_in_a_private_network_namespace():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (bash install.sh --ray)")
    if loopback_only():
        pytest.skip("already in a loopback-only network: the ray tests run directly in this session")
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    child = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider -m ray '
                                      'tests/test_ray.py', sys.executable],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    summary = (child.stdout + child.stderr)[-6000:]
    assert child.returncode == 0, f"the ray tests failed inside unshare -n:\n{summary}"
    assert " passed" in child.stdout and "skipped" not in child.stdout.splitlines()[-1], summary
