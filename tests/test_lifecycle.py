"""Signals on a real daemon: SIGHUP reloads, SIGTERM stops cleanly with the seed saved, SIGUSR1 reports."""

import os
import resource
import signal

import pytest

from conftest import connect, egd_read, recv_exact
from prngd import admin, config

QUIET = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"


def test_sighup_picks_up_a_changed_setting_and_keeps_connections(start_daemon, tmp_path):
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 1\n")
    cfg = d.args[d.args.index("-c") + 1]
    with connect(d.socket) as kept:
        kept.sendall(b"\x02\x01")
        recv_exact(kept, 1)
        with connect(d.socket) as extra:
            assert extra.recv(1) == b""  # over the limit: closed at once
        with open(cfg, "w") as f:
            f.write(QUIET + "[prngd]\nmax_connections = 3\n")
        d.signal(signal.SIGHUP)
        d.wait_for_line("configuration reloaded")
        with connect(d.socket) as extra:  # the new limit is in force
            extra.sendall(b"\x02\x05")
            assert len(recv_exact(extra, 5)) == 5
        kept.sendall(b"\x02\x05")  # and the old connection survived the reload
        assert len(recv_exact(kept, 5)) == 5


def test_sighup_with_a_broken_file_keeps_the_old_settings(start_daemon):
    d = start_daemon(config=QUIET)
    cfg = d.args[d.args.index("-c") + 1]
    with open(cfg, "a") as f:
        f.write("[bogus]\n")
    d.signal(signal.SIGHUP)
    d.wait_for_line("reload failed")
    assert len(egd_read(d.socket, 8)) == 8


def _nofile(soft: int, hard: int):
    def limit() -> None:  # in the daemon's process, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return limit


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        return int(next(line for line in f if line.startswith("Max open files")).split()[3])


def _reload_max_connections(d, n: int) -> None:
    cfg = d.args[d.args.index("-c") + 1]
    with open(cfg, "w") as f:
        f.write(QUIET + f"[prngd]\nmax_connections = {n}\n")
    d.signal(signal.SIGHUP)
    d.wait_for_line("configuration reloaded")


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] not in (resource.RLIM_INFINITY,)
                    and resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 2000, reason="needs a hard limit of 2000")
def test_sighup_raises_the_descriptor_limit_for_a_larger_max_connections(start_daemon):
    """Issue 20, finding 9: the limit was raised at start only."""
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 100\n", preexec_fn=_nofile(200, 2000))
    assert _soft_nofile(d.pid) == 200  # 100 + 8 admin handlers + 64 of its own fit already
    _reload_max_connections(d, 1000)
    assert _soft_nofile(d.pid) == 1000 + 8 + 64
    assert admin.get_status(config.admin_socket_for(d.socket))["connections"]["max"] == 1000


def test_sighup_keeps_max_connections_when_the_hard_limit_cannot_hold_the_new_one(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 100\n", preexec_fn=_nofile(200, 300))
    _reload_max_connections(d, 1000)
    d.wait_for_line("max_connections 1000 needs 1072 file descriptors, more than the hard limit 300: "
                    "keeping max_connections 100")
    assert admin.get_status(config.admin_socket_for(d.socket))["connections"]["max"] == 100
    _reload_max_connections(d, 150)  # one that fits is taken
    assert admin.get_status(config.admin_socket_for(d.socket))["connections"]["max"] == 150


def test_sigusr1_logs_statistics(start_daemon):
    d = start_daemon(config=QUIET)
    egd_read(d.socket, 100)
    d.signal(signal.SIGUSR1)
    line = d.wait_for_line("INFO: statistics: requests:")  # the summary `prngd status` prints (test_history)
    assert "100 bytes served" in line


def test_sigterm_saves_the_seed_and_removes_the_socket(start_daemon, tmp_path):
    seed = tmp_path / "state" / "seed"
    d = start_daemon(config=QUIET, seed=seed)
    written_at_start = seed.read_bytes()
    egd_read(d.socket, 32)
    d.signal(signal.SIGTERM)
    assert d.stop() == 0
    assert not os.path.exists(d.socket)
    assert not os.path.exists(d.socket + ".admin")
    assert seed.read_bytes() != written_at_start  # saved again at stop
    assert oct(seed.stat().st_mode & 0o777) == oct(0o600)


def test_second_sigterm_during_shutdown_still_saves_the_seed(start_daemon, tmp_path):
    seed = tmp_path / "seed"
    for _ in range(3):
        d = start_daemon(config=QUIET, seed=seed)
        at_start = seed.read_bytes()
        egd_read(d.socket, 16)
        d.signal(signal.SIGTERM)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0
        assert seed.read_bytes() != at_start
        assert not os.path.exists(d.socket)


def test_a_bare_word_is_not_taken_for_a_socket():
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "prngd", "-f", "stauts"], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert "neither a tool" in r.stderr


class ScriptedPool:
    """A pool whose estimate, check by check, follows a script."""

    seeded, generator_name = True, "test"

    def __init__(self, estimate):
        self.estimate, self.checks = estimate, 0

    @property
    def entropy_bits(self):
        self.checks += 1
        return self.estimate(self.checks)


async def run_monitor(pool, seconds):
    import trio

    from prngd import tasks
    from prngd.config import Settings
    from prngd.server import Daemon

    daemon = Daemon(Settings(low_water_bits=1024), pool=pool)
    with trio.move_on_after(seconds):
        await tasks.low_entropy_monitor(daemon, period=30, checks=10)


async def test_low_entropy_is_reported_once_per_episode(caplog, autojump_clock):
    caplog.set_level("INFO")
    # 25 low checks, then recovered.
    await run_monitor(ScriptedPool(lambda n: 300 if n <= 25 else 2000), 30 * 30 + 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "stayed below" in m]) == 1
    assert len([m for m in messages if "back to 2000" in m]) == 1


async def test_short_dips_are_not_reported(caplog, autojump_clock):
    # Low, but recovering every 5th check: never 10 in a row.
    await run_monitor(ScriptedPool(lambda n: 300 if n % 5 else 2000), 30 * 40)
    assert not [r for r in caplog.records if "stayed below" in r.getMessage()]


def test_sighup_keeps_each_sources_totals(start_daemon, tmp_path):
    """Issue 19: after a reload status said `kernel ... 0 samples, 0 bits` while the pool kept its totals."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(64))
    d = start_daemon("-d", config=QUIET + f"[files]\nnoise = 0.5 64 {noise}\n")
    d.wait_for_line("file:noise: 64 bytes, 32.00 bits credited")
    cfg = d.args[d.args.index("-c") + 1]

    def sources():
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-m", "prngd", "status", "--json", d.socket], env=env,
                             capture_output=True, check=True, timeout=30).stdout
        return {s["name"]: s for s in json.loads(out)["sources"]}

    before = sources()
    assert before["kernel"]["samples"] >= 1 and before["kernel"]["credited_bits"] > 0
    assert before["file:noise"]["samples"] >= 1
    with open(cfg, "a") as f:
        f.write("[prngd]\nmax_connections = 50\n")  # a change elsewhere: the sources stay the same
    d.signal(signal.SIGHUP)
    d.wait_for_line("configuration reloaded")
    after = sources()
    for name in ("kernel", "file:noise"):
        assert after[name]["samples"] >= before[name]["samples"], name
        assert after[name]["credited_bits"] >= before[name]["credited_bits"], name
    # A source the new file no longer names is gone, and one it adds starts from nothing.
    noise2 = tmp_path / "noise2"
    noise2.write_bytes(os.urandom(64))
    with open(cfg, "w") as f:
        f.write(QUIET + f"[files]\nother = 0.5 64 {noise2}\n[prngd]\nmax_connections = 51\n")
    d.signal(signal.SIGHUP)
    d.wait_for_line("max_connections 51")
    again = sources()
    assert "file:noise" not in again
    assert again["kernel"]["samples"] >= before["kernel"]["samples"]
