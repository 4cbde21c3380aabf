"""How many CPUs this process can keep busy at once: its affinity, capped by its cgroup's CPU quota.

The driver spins for a lone client's next request only when another CPU can
run that client meanwhile (prngd.driver, `busy_window`).  The affinity mask
alone overstates it in a container or a service with a CPU quota (`docker
--cpus=1`, systemd's CPUQuota=): every CPU is in the mask, but the quota is
spent by the spin.  The quota is read from cgroup v2's cpu.max, or v1's
cpu.cfs_quota_us and cpu.cfs_period_us, in the process's own cgroup and
every parent visible from it, the smallest winning.  Standard library only.
"""

from __future__ import annotations

import os

PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"


def usable_cpus(proc_cgroup: str = PROC_CGROUP, cgroup_root: str = CGROUP_ROOT) -> float:
    """CPUs by affinity, capped by the CPU quota (a fraction where the quota is one)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cpu_quota(proc_cgroup, cgroup_root)
    return cpus if quota is None else min(cpus, quota)


def cpu_quota(proc_cgroup: str = PROC_CGROUP, cgroup_root: str = CGROUP_ROOT) -> float | None:
    """The smallest CPU quota over this process's cgroup and its parents, in CPUs; None: no quota (or unknown)."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limits += _walk(os.path.join(cgroup_root, path.lstrip("/")), cgroup_root, _v2)
        elif "cpu" in controllers.split(","):
            base = os.path.join(cgroup_root, controllers)
            if not os.path.isdir(base):
                base = os.path.join(cgroup_root, "cpu")
            limits += _walk(os.path.join(base, path.lstrip("/")), base, _v1)
    return min(limits) if limits else None


def _walk(path: str, top: str, read) -> list[float]:
    """The quotas from `path` up to `top`: a limit set on a parent binds its children too."""
    found = []
    top = os.path.normpath(top)
    path = os.path.normpath(path)
    while True:
        q = read(path)
        if q is not None:
            found.append(q)
        if path == top or not path.startswith(top):
            return found
        path = os.path.dirname(path)


def _v2(path: str) -> float | None:
    try:
        with open(os.path.join(path, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1(path: str) -> float | None:
    try:
        with open(os.path.join(path, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(path, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota < 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None
