"""`prngd -k` signals only a prngd that really serves the socket.

Fake EGD servers (a small Python process) answer 0x04 with the pid of another
live process, or with their own; a real daemon is stopped on Unix and TCP,
with and without -p; in another pid namespace the pid cannot be confirmed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, egd_read, free_tcp_port
from prngd.pidfile import is_prngd_argv

FAKE_SERVER = textwrap.dedent("""\
    import os, socket, sys
    where = sys.argv[1]
    pid = os.getpid() if sys.argv[2] == "self" else int(sys.argv[2])
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(where)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(where)))
    s.listen(8)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        if c.recv(1) == b"\\x04":
            text = b"%12d" % pid
            c.sendall(bytes((len(text),)) + text)
        c.close()
""")

ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def victim():
    """An unrelated live process a fake server may name."""
    p = subprocess.Popen(["sleep", "1000"])
    yield p
    p.kill()
    p.wait()


@pytest.fixture
def fake_server(tmp_path):
    started = []

    def start(where: str, pid: int | str) -> subprocess.Popen:
        """A fake EGD server at `where` (a Unix path or a TCP port) answering 0x04 with `pid` ("self": its own)."""
        script = tmp_path / "fake_egd.py"
        script.write_text(FAKE_SERVER)
        p = subprocess.Popen([sys.executable, str(script), where, str(pid)], stdout=subprocess.PIPE, text=True)
        started.append(p)
        assert p.stdout.readline().strip() == "listening"
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def run_kill(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prngd", "-k", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_fake_server_naming_another_process_kills_nothing(tmp_path, victim, fake_server):
    sock = str(tmp_path / "fake.sock")
    fake = fake_server(sock, victim.pid)
    done = run_kill(sock)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert f"served by pid {fake.pid}" in line and f"names pid {victim.pid}" in line, line
    assert victim.poll() is None and fake.poll() is None, "something was signalled"


def test_a_fake_server_naming_itself_is_not_a_prngd(tmp_path, fake_server):
    """Its 0x04 answer agrees with SO_PEERCRED: the cmdline check must stop it."""
    sock = str(tmp_path / "fake.sock")
    fake = fake_server(sock, "self")
    done = run_kill(sock)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert f"pid {fake.pid} is not a prngd" in line, line
    assert fake.poll() is None


def test_a_fake_tcp_server_naming_another_process_kills_nothing(victim, fake_server):
    port = free_tcp_port()
    fake = fake_server(str(port), victim.pid)
    done = run_kill(f"127.0.0.1:{port}")
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert f"pid {victim.pid}" in line and "does not hold the listening socket" in line, line
    assert victim.poll() is None and fake.poll() is None


def test_kill_stops_the_real_daemon(start_daemon):
    d = start_daemon()
    assert len(egd_read(d.socket, 8)) == 8
    done = run_kill(d.socket)
    assert done.returncode == 0, done.stderr
    assert f"stopped pid {d.pid}" in done.stderr
    assert d.proc.wait(10) == 0


def test_kill_with_a_pidfile_stops_the_real_daemon(start_daemon, tmp_path):
    pidfile = str(tmp_path / "prngd.pid")
    d = start_daemon("-p", pidfile)
    assert int(open(pidfile).read()) == d.pid
    done = run_kill("-p", pidfile, d.socket)
    assert done.returncode == 0, done.stderr
    assert d.proc.wait(10) == 0


def test_a_pidfile_naming_another_process_refuses(start_daemon, tmp_path, victim):
    d = start_daemon()
    wrong = tmp_path / "wrong.pid"
    wrong.write_text(f"{victim.pid}\n")
    done = run_kill("-p", str(wrong), d.socket)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert f"names pid {victim.pid}" in line and f"served by pid {d.pid}" in line, line
    assert d.proc.poll() is None and victim.poll() is None
    assert d.stop() == 0


def test_kill_stops_the_real_daemon_on_tcp(start_daemon):
    port = free_tcp_port()
    d = start_daemon(socket=f"tcp/localhost:{port}")
    done = run_kill(f"tcp/localhost:{port}")
    assert done.returncode == 0, done.stderr
    assert d.proc.wait(10) == 0


def test_kill_stops_a_daemon_serving_two_sockets_once_and_exits_0(start_daemon, tmp_path):
    """Both sockets name the same daemon: it is stopped once, and its second socket is not 'gone'."""
    second = str(tmp_path / "second.sock")
    d = start_daemon(extra_sockets=[second])
    assert len(egd_read(second, 8)) == 8
    done = run_kill(d.socket, second)
    assert done.returncode == 0, done.stderr
    assert one_line(done.stderr) == f"prngd: stopped pid {d.pid} on {d.socket}, {second}"
    assert d.proc.wait(10) == 0


def test_kill_with_one_socket_answering_and_one_missing_stops_the_daemon_and_exits_1(start_daemon, tmp_path):
    d = start_daemon()
    missing = str(tmp_path / "missing.sock")
    done = run_kill(d.socket, missing)
    assert done.returncode == 1
    assert f"no daemon answers on {missing}" in done.stderr and f"stopped pid {d.pid}" in done.stderr, done.stderr
    assert d.proc.wait(10) == 0


@pytest.mark.parametrize("argv,expected", [
    # prngd's own entry points
    (["prngd", "-f", "/run/egd-pool"], True),
    (["/usr/local/bin/prngd", "-f"], True),
    (["/usr/bin/python3", "/usr/local/bin/prngd", "-f", "/run/egd-pool"], True),
    (["python3.11", "-I", "-u", "/opt/venv/bin/prngd"], True),
    (["/usr/bin/python3", "-m", "prngd", "-f"], True),
    (["python3", "-I", "-X", "dev", "-W", "error", "-m", "prngd"], True),
    (["python3", "-Im", "prngd"], True),
    (["python3", "-mprngd"], True),
    (["python3", "-Xfrozen_modules=off", "-m", "prngd"], True),
    (["python3", "--check-hash-based-pycs", "never", "-m", "prngd"], True),
    (["pypy3", "-m", "prngd"], True),
    (["python3.11d", "--", "/usr/bin/prngd"], True),
    # anything else whose arguments merely mention prngd
    (["less", "/usr/local/bin/prngd"], False),
    (["vim", "prngd"], False),
    (["sleep", "1000", "prngd"], False),
    (["/usr/bin/python3", "/tmp/other.py", "/usr/local/bin/prngd"], False),
    (["python3", "-m", "pytest", "prngd"], False),
    (["python3", "-m", "prngd.tools"], False),
    (["python3", "-c", "import prngd", "-m", "prngd"], False),
    (["python3", "-W", "-m", "/tmp/x.py", "prngd"], False),  # "-m" is -W's value: /tmp/x.py runs
    (["python3", "-X", "prngd", "/tmp/x.py"], False),
    (["python3", "-", "prngd"], False),
    (["pythonista", "-m", "prngd"], False),
    (["bash", "-c", "exec -a prngd sleep 1", "prngd"], False),
    ([], False),
])
def test_is_prngd_argv_accepts_only_prngds_entry_points(argv, expected):
    assert is_prngd_argv(argv) is expected


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_a_daemon_in_another_pid_namespace_is_not_signalled(start_daemon):
    """As with the host's socket shared into a container: SO_PEERCRED gives pid 0 there."""
    d = start_daemon()
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "prngd", "-k",
                           d.socket], env=ENV, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert "another pid namespace" in line, line
    assert d.proc.poll() is None
    assert d.stop() == 0
