"""Gathering in a real daemon: a hanging command is killed while clients are served,
and the credits each source logs add up to the EGD 0x00 answer.

Every wait is for an event: a log line, or data on a FIFO the test command writes.
"""

from __future__ import annotations

import os
import re
import select
import time
from datetime import datetime
from pathlib import Path

import psutil

from conftest import egd_entropy, egd_read, gone
from prngd import admin

CREDIT = re.compile(r"DEBUG: (.+?): (\d+) bytes, ([0-9.]+) bits credited")


def _stamp(line: str) -> float:
    """The time stamp the daemon's log format starts each line with."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _hang_script(directory: Path) -> tuple[str, str]:
    """A command that never ends: a shell waiting for its child; both pids go to a FIFO."""
    fifo = directory / "pids.fifo"
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)
    path = directory / "hang.sh"
    path.write_text(f"#!/bin/sh\nsleep 1000 &\necho $$ $! > {fifo}\nwait\n")
    path.chmod(0o755)
    return str(path), str(fifo)


class FifoReader:
    """Opened before the daemon starts, so the command never blocks writing to it."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read_line(self, timeout: float = 15.0) -> str:
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not readable:
                raise AssertionError(f"nothing on the FIFO within {timeout} s (got {data!r})")
            chunk = os.read(self.fd, 256)
            if not chunk:
                break
            data += chunk
        return data.decode()

    def close(self):
        os.close(self.fd)


def _config(hang: str, timeout: int) -> str:
    return f"""\
[sources]
system = no
jitter = no
command_timeout = {timeout}
command_interval = 1
[commands]
hang = 1.0 {hang}
"""


def test_hanging_command_is_killed_at_its_timeout_while_clients_are_served(start_daemon, open_dir):
    hang, fifo = _hang_script(open_dir)
    reader = FifoReader(fifo)
    try:
        d = start_daemon("-d", config=_config(hang, timeout=2))
        shell, sleeper = (int(p) for p in reader.read_line().split())
    finally:
        reader.close()
    procs = [psutil.Process(shell), psutil.Process(sleeper)]
    assert all(p.is_running() for p in procs)

    # The command hangs; clients are answered at once all the same.
    for _ in range(5):
        t0 = time.monotonic()
        assert len(egd_read(d.socket, 64)) == 64
        assert egd_entropy(d.socket) > 0
        assert time.monotonic() - t0 < 1.0
    assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs), "served while it hung"

    started = d.wait_for_line(f"command:hang running {hang} (pid {shell})")
    failed = d.wait_for_line("source command:hang failed (timed out after 2 s; killed)")
    assert gone(procs), "the command and its child outlived the timeout"
    assert not psutil.pid_exists(shell), "the daemon left its child unreaped"
    assert 1.9 <= _stamp(failed) - _stamp(started) <= 4.0
    assert len(egd_read(d.socket, 32)) == 32  # and still serving
    assert d.stop() == 0


def test_stopping_the_daemon_kills_a_running_command(start_daemon, open_dir):
    hang, fifo = _hang_script(open_dir)
    reader = FifoReader(fifo)
    try:
        d = start_daemon("-d", config=_config(hang, timeout=300))
        procs = [psutil.Process(int(p)) for p in reader.read_line().split()]
    finally:
        reader.close()
    assert all(p.is_running() for p in procs)
    assert d.stop() == 0
    assert gone(procs), "a command outlived the daemon"


def test_credits_per_source_show_in_the_debug_log_and_the_entropy_count(start_daemon):
    config = """\
[pool]
pool_bits = 1000000
[sources]
kernel_interval = 1
system_interval = 1
jitter_interval = 1
command_interval = 1
file_interval = 1
[commands]
ls = 0.05 /bin/ls -l /proc
[files]
irq = 0.01 4096 /proc/interrupts
"""
    d = start_daemon("-d", config=config)
    names = ["kernel", "system", "jitter", "command:ls", "file:irq"]
    for name in names:
        d.wait_for_line(f"DEBUG: {name}: ")  # the first sample each source credited

    before = list(d.lines)
    entropy = egd_entropy(d.socket)
    # The same credits in the daemon's status (the pool's stats and each source's).
    status = admin.get_status(d.socket + ".admin")
    by_source = status["pool"]["credited_bits_by_source"]
    listed = {s["name"]: s for s in status["sources"]}
    for name in names:
        assert by_source[name] > 0, by_source
        assert listed[name]["credited_bits"] > 0 and listed[name]["healthy"], listed[name]
    assert status["entropy_bits"] >= entropy
    assert d.stop() == 0  # flushes every line the daemon wrote, and stops it crediting
    after = list(d.lines)

    def credited(lines):
        per_source: dict[str, float] = {}
        count = 0
        for line in lines:
            m = CREDIT.search(line)
            if m:
                per_source[m[1]] = per_source.get(m[1], 0.0) + float(m[3])
                count += 1
        return per_source, count

    per_source, _ = credited(before)
    for name in names:
        assert per_source.get(name, 0) > 0, f"{name} credited nothing:\n" + "\n".join(before)
    assert per_source["kernel seed"] == 256  # seed_from_kernel, before serving
    low, n_low = credited(before)
    high, n_high = credited(after)
    # 0x00 counts exactly what was credited (no reads, no cap at this pool size):
    # at least what was logged before the question, at most what was logged by the end.
    slack = 0.005 * n_high + 1
    assert sum(low.values()) - slack <= entropy <= sum(high.values()) + slack, (low, entropy, high)
