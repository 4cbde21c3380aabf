"""Issue 13, must-show 1: a seed is credited only on the machine that wrote it.

The "clone" is this machine with another /etc/machine-id, bind-mounted in a
private mount namespace (`unshare -m`) around a real daemon process: the
daemon reads the real file at the real path, as on a cloned VM.  Needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import Daemon, egd_read
from prngd import admin
from prngd.identity import machine_identity
from prngd.seedfile import parse

HOST = machine_identity()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)"),
    pytest.mark.skipif(not os.path.isfile("/etc/machine-id") or HOST.fingerprint is None,
                       reason="needs a machine-id to swap"),
]

CLONE_ID = "c10ec10ec10ec10ec10ec10ec10ec10e\n"


@pytest.fixture
def clone_python(tmp_path):
    """An executable that runs python3 with /etc/machine-id replaced, in its own mount namespace."""
    mid = tmp_path / "clone-machine-id"
    mid.write_text(CLONE_ID)
    wrapper = tmp_path / "python-on-the-clone"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec unshare -m sh -c 'mount --bind {mid} /etc/machine-id && exec {sys.executable} \"$@\"' sh \"$@\"\n"
    )
    wrapper.chmod(0o755)
    probe = subprocess.run([str(wrapper), "-c", "print(open('/etc/machine-id').read())"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or probe.stdout.strip() != CLONE_ID.strip():
        pytest.skip(f"cannot bind-mount a machine-id here: {probe.stderr.strip()}")
    return str(wrapper)


@pytest.fixture
def start(tmp_path):
    """start(seed, name, python=None): a daemon serving tmp_path/NAME.sock with seed file `seed`, ready."""
    started: list[Daemon] = []

    def factory(seed, name, python=None) -> Daemon:
        sock = str(tmp_path / f"{name}.sock")
        args = ["-f", "-s", str(seed), sock]
        real = sys.executable
        if python is not None:
            sys.executable = python  # conftest.Daemon runs sys.executable; only for this constructor
        try:
            d = Daemon(args, sock)
        finally:
            sys.executable = real
        started.append(d)
        return d.wait_ready()

    yield factory
    for d in started:
        d.kill()


def seed_status(d: Daemon) -> dict:
    return admin.get_status(d.socket + ".admin")["seedfile"]


def test_seed_is_credited_only_on_the_machine_that_wrote_it(tmp_path, clone_python, start):
    seed = tmp_path / "state" / "seed"

    # The original machine: a first start writes a seed bound to it; a restart credits it.
    first = start(seed, "host-1")
    assert first.stop() == 0
    assert parse(seed.read_bytes()).fingerprint == HOST.fingerprint
    host = start(seed, "host-2")
    status = seed_status(host)
    assert status["credited_bits"] == 256 and status["note"] is None and status["origin"] == "this machine"
    assert host.stop() == 0
    image = seed.read_bytes()  # the disk as it is copied into a clone

    # The clone boots from that disk: the seed is mixed, not credited, replaced before the first byte.
    clone = start(seed, "clone-1", clone_python)
    at_ready = seed.read_bytes()
    assert at_ready != image
    replaced = parse(at_ready)
    assert replaced.fingerprint not in (None, HOST.fingerprint) and replaced.credit
    status = seed_status(clone)
    assert status["loaded"] and status["credited_bits"] == 0
    assert status["origin"] == "another machine" and "another machine" in status["note"]
    lines = [line for line in clone.lines if "seed file" in line]
    assert len(lines) == 1 and "not credited" in lines[0] and "another machine" in lines[0]
    assert "another machine" in admin.render_status_text(admin.get_status(clone.socket + ".admin"))
    assert len(egd_read(clone.socket, 32)) == 32
    assert clone.stop() == 0

    # The clone's next start credits its own seed.
    clone2 = start(seed, "clone-2", clone_python)
    status = seed_status(clone2)
    assert status["credited_bits"] == 256 and status["note"] is None and status["origin"] == "this machine"
    assert clone2.stop() == 0

    # And the original, handed the clone's seed, does not credit it.
    back = start(seed, "host-3")
    status = seed_status(back)
    assert status["credited_bits"] == 0 and status["origin"] == "another machine"
    assert back.stop() == 0
