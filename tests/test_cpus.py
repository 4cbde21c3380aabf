"""prngd.cpus: CPUs by affinity, capped by the cgroup CPU quota (v2 cpu.max, v1 cfs), read from fake trees."""

from __future__ import annotations

import os

import pytest

from prngd import cpus


def tree(tmp_path, proc: str, files: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    root.mkdir(exist_ok=True)
    proc_file = tmp_path / "cgroup-of-self"
    proc_file.write_text(proc)
    return str(proc_file), str(root)


def test_v2_quota_of_the_service_and_of_a_parent_the_smaller_wins(tmp_path):
    p, r = tree(tmp_path, "0::/system.slice/prngd.service\n", {
        "system.slice/prngd.service/cpu.max": "150000 100000\n",
        "system.slice/cpu.max": "max 100000\n",
    })
    assert cpus.cpu_quota(p, r) == 1.5
    p, r = tree(tmp_path, "0::/system.slice/prngd.service\n", {
        "system.slice/prngd.service/cpu.max": "max 100000\n",
        "system.slice/cpu.max": "50000 100000\n",
    })
    assert cpus.cpu_quota(p, r) == 0.5


def test_no_quota_anywhere_or_nothing_readable_is_none(tmp_path):
    p, r = tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpus.cpu_quota(p, r) is None
    p, r = tree(tmp_path, "0::/gone\n", {})
    assert cpus.cpu_quota(p, r) is None
    assert cpus.cpu_quota(str(tmp_path / "no-such-file"), r) is None
    p, r = tree(tmp_path, "0::/\n", {"cpu.max": "garbage\n"})
    assert cpus.cpu_quota(p, r) is None


def test_v1_cfs_quota_under_the_cpu_controller(tmp_path):
    p, r = tree(tmp_path, "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
    })
    assert cpus.cpu_quota(p, r) == 1.0


def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    p, r = tree(tmp_path, "0::/a\n", {"a/cpu.max": "100000 100000\n"})
    assert cpus.usable_cpus(p, r) == 1.0
    p, r = tree(tmp_path, "0::/b\n", {"b/cpu.max": "max 100000\n"})
    assert cpus.usable_cpus(p, r) == 4


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no sched_getaffinity")
def test_this_machine_answers_a_positive_number():
    assert 0 < cpus.usable_cpus() <= len(os.sched_getaffinity(0))
