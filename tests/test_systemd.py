"""systemd integration: listen_fds() and notify() alone, then the real daemon socket-activated and notifying."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Daemon, egd_entropy, egd_read
from prngd import systemd

LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LISTEN_VARS and k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# ---------------------------------------------------------------- listen_fds: the environment

@pytest.fixture
def clean_env(monkeypatch):
    for var in (*LISTEN_VARS, "NOTIFY_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_no_environment_means_no_sockets(clean_env):
    assert systemd.listen_fds() == []


def test_sockets_meant_for_another_process_are_left_alone(clean_env):
    # Children inherit LISTEN_*; only the process named by LISTEN_PID may take the fds.
    clean_env.setenv("LISTEN_PID", str(os.getpid() + 1))
    clean_env.setenv("LISTEN_FDS", "2")
    assert systemd.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "2"
    assert systemd.listen_fds() == []
    assert not any(v in os.environ for v in LISTEN_VARS), "unset_environment=True clears the variables"


@pytest.mark.parametrize("pid,fds", [("", "1"), ("abc", "1"), (None, "1")])
def test_missing_or_malformed_pid_means_no_sockets(clean_env, pid, fds):
    if pid is not None:
        clean_env.setenv("LISTEN_PID", pid)
    clean_env.setenv("LISTEN_FDS", fds)
    assert systemd.listen_fds() == []


def test_malformed_count_is_an_error(clean_env):
    clean_env.setenv("LISTEN_PID", str(os.getpid()))
    clean_env.setenv("LISTEN_FDS", "two")
    with pytest.raises(ValueError, match="LISTEN_FDS"):
        systemd.listen_fds()
    assert "LISTEN_FDS" not in os.environ


def test_zero_fds(clean_env):
    clean_env.setenv("LISTEN_PID", str(os.getpid()))
    clean_env.setenv("LISTEN_FDS", "0")
    assert systemd.listen_fds() == []


# In a fresh process, since fds 3 and up belong to pytest here: the child moves
# the sockets it was given to fds 3.., sets LISTEN_PID to itself, and reports
# what listen_fds() found.
PROBE = r"""
import json, os, socket, sys
from prngd import systemd
given = [int(x) for x in sys.argv[1:]]
for i, fd in enumerate(given):
    os.dup2(fd, 3 + i)          # dup2 makes the copy inheritable, as systemd passes it
for fd in given:
    if fd >= 3 + len(given):
        os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
found = systemd.listen_fds_with_names()
print(json.dumps({
    "fds": [s.fileno() for s, _ in found],
    "names": [n for _, n in found],
    "families": [int(s.family) for s, _ in found],
    "types": [int(s.type) for s, _ in found],
    "inheritable": [os.get_inheritable(s.fileno()) for s, _ in found],
    "env_left": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ],
}))
"""


def run_probe(socks, **env) -> dict:
    fds = [s.fileno() for s in socks]
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, fds)], pass_fds=fds, capture_output=True,
                         text=True, env=child_env(LISTEN_FDS=str(len(fds)), **env), timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_listen_fds_finds_family_type_names_and_sets_cloexec(tmp_path):
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "s"))
    unix.listen()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with unix, tcp, dgram:
        got = run_probe([unix, tcp, dgram], LISTEN_FDNAMES="egd:tcp:notify")
    assert got["fds"] == [3, 4, 5]
    assert got["names"] == ["egd", "tcp", "notify"]
    assert got["families"] == [socket.AF_UNIX, socket.AF_INET, socket.AF_UNIX]
    assert got["types"] == [socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM]
    assert got["inheritable"] == [False, False, False]
    assert got["env_left"] == []


def test_listen_fds_names_default_to_unknown_when_they_do_not_match(tmp_path):
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        got = run_probe([a, b], LISTEN_FDNAMES="only-one")
    assert got["names"] == ["unknown", "unknown"]


def test_listen_fds_skips_an_fd_that_is_not_a_socket(tmp_path):
    r, w = os.pipe()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, str(r), str(s.fileno())], pass_fds=[r, s.fileno()],
                             capture_output=True, text=True, env=child_env(LISTEN_FDS="2"), timeout=30)
    finally:
        os.close(r)
        os.close(w)
        s.close()
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["fds"] == [4]
    assert "not a usable socket" in out.stderr


# ---------------------------------------------------------------- notify

def test_notify_without_systemd_returns_false(clean_env):
    assert systemd.notify("READY=1") is False
    clean_env.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False


def test_notify_sends_a_datagram_to_a_path(clean_env, tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        clean_env.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1\nSTATUS=serving") is True
        rx.settimeout(5)
        assert rx.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_to_an_abstract_socket(clean_env):
    name = f"prngd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind("\0" + name)
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STOPPING=1") is True
        rx.settimeout(5)
        assert rx.recv(4096) == b"STOPPING=1"


def test_notify_to_a_missing_socket_returns_false(clean_env, tmp_path):
    clean_env.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert systemd.notify("READY=1") is False


# ---------------------------------------------------------------- the daemon under systemd's protocols

def activate(tmp_path, fd_name: str):
    """Bind a socket as systemd would and start the daemon with it as fd 3 (LISTEN_FDS=1,
    LISTEN_FDNAMES=fd_name).  Returns (process, socket path, configured path, log lines to serving)."""
    path = str(tmp_path / "activated.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    fd = sock.fileno()
    # A small exec wrapper puts the socket on fd 3 and names itself in
    # LISTEN_PID (exec keeps the pid), as systemd does.
    wrapper = ("import os, sys\n"
               f"if {fd} != 3:\n    os.dup2({fd}, 3)\n    os.close({fd})\n"
               f"os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES={fd_name!r})\n"
               "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n")
    # The daemon is told a different path: with sockets passed it must serve those, not bind its own.
    own = str(tmp_path / "configured.sock")
    proc = subprocess.Popen([sys.executable, "-c", wrapper, "-m", "prngd", "-f", "-n", own],
                            pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=child_env(PYTHONUNBUFFERED="1"))
    sock.close()  # the daemon holds it now
    log = []
    for line in proc.stdout:
        log.append(line)
        if "serving on" in line:
            break
    return proc, path, own, log


def stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    proc.stdout.close()
    return proc.returncode


def test_socket_activation(tmp_path):
    """The test binds the socket, as systemd would, and hands it over as fd 3 with LISTEN_FDS=1."""
    proc, path, own, log = activate(tmp_path, "egd")
    try:
        assert "serving on" in log[-1], "daemon exited before serving:\n" + "".join(log)
        assert len(egd_read(path, 32)) == 32
        assert egd_entropy(path) > 0
        from prngd.client import EGDClient

        with EGDClient(path) as c:
            assert c.pid() == proc.pid
        assert not os.path.exists(own), "an activated daemon must not bind its configured socket"
    finally:
        assert stop(proc) == 0
    # The socket belongs to systemd: the daemon leaves it in place.
    assert os.path.exists(path)


def test_a_socket_systemd_names_with_pr_reseeds_before_every_read(tmp_path):
    """FileDescriptorName=egd,pr: the passed socket gets prediction resistance, as PATH,pr would."""
    from prngd import admin

    proc, path, own, log = activate(tmp_path, "egd,pr")
    try:
        assert f"serving on {path},pr" in log[-1], "".join(log)
        before = admin.get_status(own + ".admin")["pool"]["pr_reseeds"]
        for _ in range(3):
            assert len(egd_read(path, 16)) == 16
        assert admin.get_status(own + ".admin")["pool"]["pr_reseeds"] == before + 3
    finally:
        assert stop(proc) == 0


def test_an_unknown_option_in_systemds_name_for_a_socket_is_one_line(tmp_path):
    proc, path, own, log = activate(tmp_path, "egd,fast")
    if log and "serving on" in log[-1]:
        stop(proc)
        raise AssertionError("served a socket with an unknown option:\n" + "".join(log))
    out = "".join(log)  # activate() read to the end: the daemon has closed its output
    assert proc.wait(20) != 0
    proc.stdout.close()
    assert "unknown socket option 'fast' in the name 'egd,fast' systemd gave a socket" in out
    assert "Traceback" not in out


def test_notify_ready_and_stopping(tmp_path):
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(notify_path)
        rx.settimeout(20)
        d = Daemon(["-f", "-n", str(tmp_path / "egd.sock")], str(tmp_path / "egd.sock"),
                   env={"NOTIFY_SOCKET": notify_path})
        try:
            first = rx.recv(4096).decode()
            assert "READY=1" in first.split("\n")
            assert "STATUS=" in first
            # READY comes once every socket listens: the socket answers right away.
            assert egd_entropy(d.socket) > 0
            d.signal(signal.SIGTERM)
            messages = []
            while "STOPPING=1" not in messages:
                messages += rx.recv(4096).decode().split("\n")
            # (Not d.stop(): it would send a second SIGTERM into the shutdown.)
            assert d.proc.wait(20) == 0
        finally:
            d.kill()
