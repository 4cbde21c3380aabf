"""The fallback runtime directory /tmp/prngd-UID: created 0700 by the daemon, refused when not private.

The daemon-level tests run prngd as uid 65534 without $XDG_RUNTIME_DIR: a
forked child of this test imports what it needs as root (this machine's
Python may be out of nobody's reach), then setuid()s and runs the command
line in-process, its output going to a pipe.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import stat
import sys
import threading
import time

import pytest

from conftest import NOBODY_UID, egd_read, fork_as_nobody
from prngd import config, privileges

RUNTIME = f"/tmp/prngd-{NOBODY_UID}"
QUIET = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as uid 65534 needs root")


class ForkedDaemon:
    """`prngd -f -n ARGS` as uid 65534 without XDG_RUNTIME_DIR, in a forked child; its output line by line."""

    def __init__(self, *args: str):
        from prngd import cli, server, tasks  # noqa: F401 (imported as root: see below)

        def run(w: int) -> int:
            os.dup2(w, 1)
            os.dup2(w, 2)
            sys.stdout = sys.stderr = os.fdopen(w, "w", buffering=1)
            os.environ.pop("XDG_RUNTIME_DIR", None)
            return cli.main(["-f", "-n", *args])

        # cli, server and tasks import every module the daemon needs: after
        # setuid this Python's own files may be unreadable.
        self.pid, r = fork_as_nobody(run)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._pump, args=(os.fdopen(r, errors="replace"),), daemon=True)
        self._reader.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for_line(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"exited before logging {needle!r}:\n" + "\n".join(self.lines))
            if needle in line:
                return line

    def wait(self, timeout: float = 20.0) -> int:
        """The exit status; the output is complete once this returns."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "still running:\n" + "\n".join(self.lines)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def runtime_dir():
    """/tmp/prngd-65534 is a real, shared path: taken only if absent, and removed afterwards."""
    if os.path.lexists(RUNTIME):
        pytest.skip(f"{RUNTIME} already exists; not touching another user's directory")
    yield RUNTIME
    if os.path.islink(RUNTIME) or not os.path.isdir(RUNTIME):
        os.unlink(RUNTIME)
    else:
        shutil.rmtree(RUNTIME)


@pytest.fixture
def config_file(open_dir):
    """A configuration uid 65534 can read."""
    path = os.path.join(open_dir, "quiet.conf")
    with open(path, "w") as f:
        f.write(QUIET)
    os.chmod(path, 0o644)
    return path


@needs_root
def test_a_0777_directory_owned_by_root_is_refused(runtime_dir, config_file):
    os.mkdir(runtime_dir)
    os.chmod(runtime_dir, 0o777)  # what a hostile user would leave there, here owned by root
    d = ForkedDaemon("-c", config_file)
    try:
        assert d.wait() == 1
    finally:
        d.kill()
    assert len(d.lines) == 1, d.lines
    assert d.lines[0].endswith(f"ERROR: runtime directory {runtime_dir} belongs to root (uid 0), not to uid "
                               f"{NOBODY_UID}: refusing to serve in it (remove it, or set XDG_RUNTIME_DIR, or "
                               "name a socket elsewhere)"), d.lines[0]
    assert os.listdir(runtime_dir) == [], "something was made in it"


@needs_root
def test_a_missing_directory_is_created_private_and_served_in(runtime_dir, config_file):
    d = ForkedDaemon("-c", config_file)
    try:
        d.wait_for_line("serving on ")
        st = os.lstat(runtime_dir)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == NOBODY_UID and stat.S_IMODE(st.st_mode) == 0o700
        sock = os.path.join(runtime_dir, "egd-pool")
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert len(egd_read(sock, 8)) == 8
        os.kill(d.pid, signal.SIGTERM)
        assert d.wait() == 0
    finally:
        d.kill()
    assert os.listdir(runtime_dir) == []  # its own directory: the sockets are removed at stop


def test_the_client_tools_compute_the_path_and_create_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert config.default_socket() == "/tmp/prngd-4242/egd-pool"
    assert not os.path.lexists("/tmp/prngd-4242")
    settings = config.Settings()
    assert config.fallback_runtime_dir_in_use(settings) == "/tmp/prngd-4242"
    assert config.fallback_runtime_dir_in_use(settings.replace(sockets=[str(tmp_path / "egd")])) is None
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert config.fallback_runtime_dir_in_use(settings) is None


@pytest.mark.parametrize("make,problem", [
    (lambda p, t: os.symlink(t, p), "is a symbolic link"),
    (lambda p, t: open(p, "w").close(), "is not a directory"),
    (lambda p, t: (os.mkdir(p), os.chmod(p, 0o770)), "is writable by group or others (mode 0770)"),
    (lambda p, t: (os.mkdir(p), os.chmod(p, 0o703)), "is writable by group or others (mode 0703)"),
    (lambda p, t: (os.mkdir(p, 0o700), os.chown(p, 4242, 4242)), "belongs to uid 4242, not to uid 0"),
])
@needs_root
def test_what_is_not_private_is_refused(tmp_path, make, problem):
    path = str(tmp_path / "run")
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    make(path, str(target))
    with pytest.raises(privileges.PrivilegeError) as e:
        privileges.ensure_private_dir(path)
    assert str(e.value).startswith(f"runtime directory {path} {problem}: refusing"), str(e.value)


def test_a_private_directory_is_made_0700_and_accepted(tmp_path):
    path = str(tmp_path / "run")
    old = os.umask(0)
    try:
        privileges.ensure_private_dir(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    privileges.ensure_private_dir(path)  # and again, now that it exists
