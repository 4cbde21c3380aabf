"""`prngd reseed`: the admin socket makes the daemon reseed from the kernel now, as a detected restore does.

For snapshot tools and host agents, after a restore the daemon's clocks may not show.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import NOBODY_UID, ROOT, fork_as_nobody
from prngd import admin, cli

ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
LOGGED = "reseed asked by uid 0 (prngd reseed): pool reseeded with fresh kernel randomness"


def reseed(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prngd", "reseed", *args], env=ENV, capture_output=True, text=True,
                          timeout=60, cwd="/")


def reseed_as_nobody(socket: str) -> tuple[int, str]:
    """`prngd reseed SOCKET` run in a child that became uid 65534: (exit status, what it printed)."""

    def ask(w: int) -> int:
        sys.stdout = sys.stderr = os.fdopen(w, "w")  # flushed by fork_as_nobody
        return cli.main(["reseed", socket])

    pid, r = fork_as_nobody(ask)
    with os.fdopen(r) as f:
        said = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


def test_reseed_reseeds_rewrites_the_seed_file_and_logs_one_line(start_daemon, tmp_path):
    seed = tmp_path / "seed"
    d = start_daemon(seed=seed)
    status = admin.get_status(d.socket + ".admin")
    on_disk, written = seed.read_bytes(), os.stat(seed).st_mtime_ns
    assert status["restore_generation"] == 0

    done = reseed(d.socket)
    assert done.returncode == 0, done.stderr
    after = admin.get_status(d.socket + ".admin")
    assert after["reseeds"] == status["reseeds"] + 1 and after["restore_generation"] == 1
    _, _, metrics = admin.parse_response(admin.request(d.socket + ".admin", "/metrics"))
    assert "\nprngd_restores_total 1\n" in metrics.decode()  # what an alert on restores watches
    assert done.stdout == (f"prngd reseed: pid {d.pid}: pool reseeded with fresh kernel randomness "
                           f"({after['reseeds']} reseeds, restore generation 1); seed file rewritten\n")
    assert done.stderr == ""
    # Rewritten before the answer: a snapshot tool may rely on it when `prngd reseed` returns.
    assert seed.read_bytes() != on_disk and os.stat(seed).st_mtime_ns > written
    assert after["seedfile"]["saves"] == status["seedfile"]["saves"] + 1
    assert [line for line in d.lines if "reseeded" in line] == [d.wait_for_line(LOGGED)]
    assert d.stop() == 0


def test_reseed_without_a_seed_file_says_so(start_daemon):
    d = start_daemon()
    done = reseed("--admin", d.socket + ".admin", d.socket)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").endswith("restore generation 1); no seed file")


def test_reseed_with_no_daemon_is_one_line_and_exit_1(tmp_path):
    done = reseed(str(tmp_path / "egd.sock"))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prngd reseed: ") and "no such socket" in lines[0], done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="asking as another uid needs root")
def test_reseed_is_refused_to_another_uid(start_daemon, open_dir):
    """An admin socket opened to everyone (for monitoring) still lets only root or the daemon's user reseed."""
    seed = open_dir / "seed"
    d = start_daemon(seed=seed, socket=str(open_dir / "egd.sock"), config="[prngd]\nadmin_mode = 0666\n")
    before, on_disk = admin.get_status(d.socket + ".admin"), seed.read_bytes()
    code, said = reseed_as_nobody(d.socket)
    assert code == 1
    assert said == (f"prngd reseed: {d.socket}.admin: asking for a reseed: the daemon answered 403: only root or "
                    f"the daemon's user (uid 0) may ask for a reseed\n")
    d.wait_for_line(f"admin: reseed refused to uid {NOBODY_UID}: only root or the daemon's user (uid 0) may ask")
    after = admin.get_status(d.socket + ".admin")
    assert after["reseeds"] == before["reseeds"] and after["restore_generation"] == 0
    assert seed.read_bytes() == on_disk
    assert d.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="-u needs root")
def test_the_daemons_own_user_may_ask(start_daemon, open_dir):
    """After -u nobody, the daemon's user is nobody: nobody's request is its own, and allowed."""
    cfg = open_dir / "prngd.conf"  # where nobody may read it again at SIGHUP (tmp_path is root's, 0700)
    cfg.write_text("[prngd]\nadmin_mode = 0666\n")
    d = start_daemon("-u", "nobody", "-c", str(cfg), socket=str(open_dir / "egd.sock"))
    code, said = reseed_as_nobody(d.socket)
    assert code == 0, said
    assert said.startswith(f"prngd reseed: pid {d.pid}: pool reseeded") and "restore generation 1" in said
    d.wait_for_line(f"reseed asked by uid {NOBODY_UID} (prngd reseed)")
    assert d.stop() == 0
