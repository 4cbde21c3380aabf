"""prngd replaces or removes only what it can show it wrote (ownfile.py; issue 19).

With real daemon processes: the pidfile of another live program is neither
overwritten nor deleted; a socket a live server holds is never replaced, even
when its queue is full or it is a datagram socket, and at exit a socket bound
at prngd's path since (by another server) stays.  Below, the rule itself on
each kind of thing, without a daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import Daemon, egd_read
from prngd import ownfile


def _started_or_refused(d: Daemon) -> int:
    """Wait until the daemon serves or exits; stop it if it serves; its exit code."""
    try:
        d.wait_for_line("INFO: serving on ", timeout=30)  # not "already serving on this socket"
    except AssertionError:
        d.proc.wait(30)  # its output ended without serving: it is exiting
    return d.stop()


def _errors(d: Daemon) -> list[str]:
    return [line for line in d.lines if "ERROR" in line]


# ---------------------------------------------------------------- the pidfile

def test_the_pidfile_of_another_live_program_is_left_and_kept(tmp_path):
    """`-p other.pid` naming a running program: refused before anything is written, and not deleted."""
    other = subprocess.Popen(["sleep", "600"])
    try:
        pidfile = tmp_path / "other.pid"
        pidfile.write_text(f"{other.pid}\n")
        before = os.stat(pidfile)
        d = Daemon(["-f", "-n", "-p", str(pidfile), str(tmp_path / "s")], str(tmp_path / "s"))
        rc = _started_or_refused(d)
        assert pidfile.read_text() == f"{other.pid}\n", d.log()  # neither overwritten nor deleted at exit
        assert os.stat(pidfile).st_ino == before.st_ino
        assert rc == 1, d.log()
        errors = _errors(d)
        assert len(errors) == 1 and "Traceback" not in d.log(), d.log()
        assert f"pidfile {pidfile} exists and names pid {other.pid}, a running program that is not prngd (sleep 600)" \
               in errors[0]
        assert other.poll() is None
        assert not (tmp_path / "s").exists()  # its socket went with the failed start
    finally:
        other.kill()
        other.wait()


def test_the_pidfile_of_a_dead_program_is_replaced_and_removed_at_exit(tmp_path):
    other = subprocess.Popen(["true"])
    other.wait()
    pidfile = tmp_path / "old.pid"
    pidfile.write_text(f"{other.pid}\n")
    d = Daemon(["-f", "-n", "-p", str(pidfile), str(tmp_path / "s")], str(tmp_path / "s")).wait_ready()
    try:
        assert pidfile.read_text() == f"{d.pid}\n"
    finally:
        assert d.stop() == 0
    assert not pidfile.exists()


# ---------------------------------------------------------------- sockets

def _full_server(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A live server that never accepts, its queue filled: connect() to it gets EAGAIN, not a refusal."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    clients = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            return server, clients
        clients.append(c)
        assert len(clients) < 100, "the queue never filled"


def test_a_live_server_with_a_full_queue_keeps_its_socket(tmp_path):
    path = str(tmp_path / "busy")
    server, clients = _full_server(path)
    try:
        ino = os.stat(path).st_ino
        d = Daemon(["-f", "-n", path], path)
        rc = _started_or_refused(d)
        assert os.stat(path).st_ino == ino, d.log()  # the server's own socket file, still there
        assert rc == 1 and len(_errors(d)) == 1, d.log()
        assert "another daemon is already serving on this socket" in _errors(d)[0]
        conn, _ = server.accept()  # and it still serves the clients queued on it
        conn.close()
    finally:
        for c in clients:
            c.close()
        server.close()


def test_a_live_datagram_socket_is_not_replaced(tmp_path):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a logger's, say
    server.bind(path)
    try:
        ino = os.stat(path).st_ino
        d = Daemon(["-f", "-n", path], path)
        rc = _started_or_refused(d)
        assert os.stat(path).st_ino == ino, d.log()
        assert rc == 1 and len(_errors(d)) == 1, d.log()
        assert "cannot tell whether anyone serves on it" in _errors(d)[0]
    finally:
        server.close()


def test_at_exit_a_socket_another_server_bound_since_is_kept(tmp_path):
    """Removed and re-bound by someone else while prngd ran: prngd's exit must not take it away."""
    path = str(tmp_path / "s")
    d = Daemon(["-f", "-n", path], path).wait_ready()
    servers = []
    try:
        assert len(egd_read(path, 8)) == 8
        for p in (path, path + ".admin"):
            os.unlink(p)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(p)
            s.listen()
            servers.append(s)
    finally:
        assert d.stop() == 0
    try:
        for p in (path, path + ".admin"):
            assert os.path.exists(p), d.log()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(p)  # still the other server's
    finally:
        for s in servers:
            s.close()


def test_at_exit_prngd_removes_its_own_sockets(tmp_path):
    path = str(tmp_path / "s")
    d = Daemon(["-f", "-n", path], path).wait_ready()
    assert os.path.exists(path) and os.path.exists(path + ".admin")
    assert d.stop() == 0
    assert not os.path.exists(path) and not os.path.exists(path + ".admin")


# ---------------------------------------------------------------- the rule, without a daemon

def test_refusal_names_what_is_there(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert ownfile.refusal(os.lstat(f), "a pidfile") is None
    os.link(f, tmp_path / "g")
    assert ownfile.refusal(os.lstat(f), "a pidfile").startswith("has 2 hard links")
    (tmp_path / "l").symlink_to(tmp_path / "nowhere")
    assert ownfile.refusal(os.lstat(tmp_path / "l"), "a pidfile") == "is a symbolic link, never followed"
    os.mkfifo(tmp_path / "p")
    assert ownfile.refusal(os.lstat(tmp_path / "p"), "a pidfile") == "is a FIFO, not a pidfile"
    assert ownfile.refusal(os.lstat("/dev/null"), "a log file") == "is a character device, not a log file"
    assert ownfile.refused("/x", "is a FIFO, not a pidfile") == "/x exists and is a FIFO, not a pidfile; not replacing it"


def test_clear_socket_path(tmp_path):
    path = str(tmp_path / "s")
    assert ownfile.clear_socket_path(path) is None  # nothing there
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # bound, never listening: nobody answers
    assert os.path.exists(path) and ownfile.clear_socket_path(path) is None and not os.path.exists(path)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen()
    try:
        assert "already serving" in ownfile.clear_socket_path(path) and os.path.exists(path)
        assert ownfile.remove_stale_socket(path) is False and os.path.exists(path)
    finally:
        live.close()
    assert ownfile.remove_stale_socket(path) is True and not os.path.exists(path)
    os.mkfifo(path)
    assert ownfile.clear_socket_path(path) == f"{path} exists and is a FIFO, not a socket; not replacing it"
    assert ownfile.remove_stale_socket(path) is False and os.path.exists(path)


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_bytes(b"2026-01-01 prngd[1] INFO: serving\n"), None),
    (lambda p: p.write_bytes(b""), None),
    (lambda p: p.write_bytes(b"log\n" + bytes(10)), "holds binary data, not a log file"),
    (lambda p: (p.write_bytes(b"#!/bin/sh\n"), os.chmod(p, 0o700)), "is executable (mode 0700), not a log file"),
])
def test_log_refusal(tmp_path, make, why):
    path = tmp_path / "log"
    make(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert ownfile.log_refusal(fd) == why
    finally:
        os.close(fd)


def test_only_the_tail_of_a_long_log_is_read(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(bytes(100) + b"x\n" * ownfile.LOG_TAIL)  # NULs long ago: a log since
    fd = os.open(path, os.O_RDONLY)
    try:
        assert ownfile.log_refusal(fd) is None
    finally:
        os.close(fd)
