"""Shared helpers: a real prngd daemon in a subprocess, and a tiny blocking EGD talker.

Tests about sockets, signals and files run the real daemon (`python -m prngd
-f ...`) and wait for events it announces (a line on stderr, a socket that
answers), never for a fixed time.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "serving on "  # the daemon logs this once every socket listens


class Daemon:
    """A prngd process; its stderr is collected line by line in a thread."""

    def __init__(self, args: list[str], socket_path: str | None, env: dict | None = None, cwd=None,
                 wrapper: tuple[str, ...] = (), preexec_fn: Callable[[], None] | None = None):
        """`wrapper`: a command that runs the daemon's (bwrap ... --): signals then reach the wrapper."""
        self.args = args
        self.socket = socket_path
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "prngd", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, cwd=cwd, text=True, errors="replace", preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._readers = [threading.Thread(target=self._pump, args=(stream,), daemon=True)
                         for stream in (self.proc.stderr, self.proc.stdout)]
        for t in self._readers:
            t.start()

    def _pump(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(self, needle: str, timeout: float = 20.0) -> str:
        """Block until a log line containing `needle` appears (or fail)."""
        for line in self.lines:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no log line with {needle!r}; log so far:\n" + "\n".join(self.lines))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)
                raise AssertionError(f"daemon exited ({self.proc.poll()}) before logging {needle!r}:\n"
                                     + "\n".join(self.lines))
            if needle in line:
                return line

    def wait_ready(self, timeout: float = 20.0) -> "Daemon":
        self.wait_for_line(READY_LINE, timeout)
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            for t in self._readers:
                t.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def start_daemon(tmp_path):
    """Start `python -m prngd -f [args] SOCKET` and wait until it serves.

    Returns a factory: start_daemon(*args, socket=None, config=None, seed=False,
    env=None, ready=True, preexec_fn=None).  By default the daemon gets a socket in tmp_path, no
    seed file (-n) unless seed is a path, and a config file written from the
    `config` text if given.  Every daemon started is killed at the end.
    """
    started: list[Daemon] = []
    counter = [0]

    def factory(*args, socket=None, config=None, seed=None, env=None, ready=True, extra_sockets=(), preexec_fn=None):
        counter[0] += 1
        sock = socket or str(tmp_path / f"egd-{counter[0]}.sock")
        argv = ["-f"]
        if config is not None:
            cfg = tmp_path / f"prngd-{counter[0]}.conf"
            cfg.write_text(config)
            argv += ["-c", str(cfg)]
        if seed is None:
            argv += ["-n"]
        else:
            argv += ["-s", str(seed)]
        argv += list(args)
        argv += [sock, *extra_sockets]
        d = Daemon(argv, sock, env=env, preexec_fn=preexec_fn)
        started.append(d)
        if ready:
            d.wait_ready()
        return d

    yield factory
    for d in started:
        if d.proc.poll() is None:
            d.kill()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address: str, timeout: float = 10.0) -> socket.socket:
    """A blocking socket connected to a Unix path or HOST:PORT."""
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(address)
    else:
        host, _, port = address.rpartition(":")
        s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def egd_read(address: str, n: int, blocking: bool = True) -> bytes:
    """One EGD read on a fresh connection (0x02, or 0x01 with its count byte checked)."""
    with connect(address) as s:
        if blocking:
            s.sendall(bytes((2, n)))
            return recv_exact(s, n)
        s.sendall(bytes((1, n)))
        count = recv_exact(s, 1)[0]
        return recv_exact(s, count)


def egd_entropy(address: str) -> int:
    with connect(address) as s:
        s.sendall(b"\x00")
        return int.from_bytes(recv_exact(s, 4), "big")


def gone(procs: list, timeout: float = 5.0) -> bool:
    """Whether every process has exited (a zombie counts: it runs nothing), waiting up to `timeout`.

    Waits on a pidfd, which becomes readable when the process exits: an event, not a poll.
    """
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            fd = os.pidfd_open(p.pid)
        except ProcessLookupError:
            continue
        try:
            if not p.is_running():  # the pid now belongs to someone else: ours is gone
                continue
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return False
        finally:
            os.close(fd)
    return True


# ---------------------------------------------------------------- as another user

NOBODY_UID = 65534  # uid and gid a forked child switches to


@pytest.fixture
def open_dir():
    """A directory under /tmp anyone may traverse: pytest's tmp_path sits under a 0700 directory,
    out of reach of uid 65534 (a forked child, prngd -u, the commands a root daemon runs)."""
    path = tempfile.mkdtemp(prefix="prngd-open-", dir="/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def fork_as_nobody(run: Callable[[int], int]) -> tuple[int, int]:
    """Fork a child that becomes uid and gid 65534 with no groups, then exits with `run(w)`.

    `w` is the write end of a pipe whose read end the parent gets: returns
    (pid, r).  A child that raises prints the traceback to its sys.stderr and
    exits 99.  Needs root.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os._exit
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY_UID)
            os.setuid(NOBODY_UID)
            code = run(w)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    return pid, r
