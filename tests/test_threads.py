"""Thread counts: an explicit --threads wins; otherwise the idle cores measured now, at least one."""

from __future__ import annotations

import os

import pytest

from fastsam2.runtime.threads import idle_cores, plan_threads, usable_cores


def test_explicit_threads_are_taken_as_given():
    plan = plan_threads(1)
    assert plan.threads == 1 and plan.source == "--threads" and plan.idle_cores is None
    assert plan.to_json() == {"threads": 1, "cores": usable_cores(), "idle_cores": None, "source": "--threads"}
    with pytest.raises(ValueError, match="threads must be >= 1"):
        plan_threads(0)


def test_more_threads_than_cores_are_refused():
    from fastsam2.runtime.errors import UsageError

    cores = usable_cores()
    assert plan_threads(cores).threads == cores
    with pytest.raises(UsageError, match=f"may run on {cores} CPU core"):
        plan_threads(cores + 1)


def test_default_is_the_idle_share_of_the_usable_cores():
    idle = idle_cores(0.1)
    assert idle is not None and 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6
    plan = plan_threads()
    assert plan.source == "idle cores" and 1 <= plan.threads <= plan.cores == usable_cores()
    # the choice is the measured idle CPUs, rounded, within [1, usable cores]
    assert plan.threads == max(1, min(plan.cores, int(plan.idle_cores + 0.5)))
