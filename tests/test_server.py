"""The daemon end to end: a real `python -m prngd` process, real Unix and TCP sockets."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import ROOT, connect, egd_entropy, egd_read, free_tcp_port, recv_exact

# No background source may change the estimate behind a test's back.
QUIET = """
[sources]
system = no
jitter = no
external_commands = no
kernel_interval = 3600
"""


@pytest.fixture
def daemon(start_daemon):
    port = free_tcp_port()
    d = start_daemon(config=QUIET, extra_sockets=[f"127.0.0.1:{port}"])
    d.tcp = f"127.0.0.1:{port}"
    return d


def addresses(d):
    return [d.socket, d.tcp]


def test_every_command_over_unix_and_tcp(daemon):
    for address in addresses(daemon):
        with connect(address) as s:
            s.sendall(b"\x00")
            assert int.from_bytes(recv_exact(s, 4), "big") > 0  # seeded: never 0
            s.sendall(b"\x01\xff")
            assert recv_exact(s, 1) == b"\xff"  # the full count, right after start
            first = recv_exact(s, 255)
            s.sendall(b"\x02\xff")
            second = recv_exact(s, 255)
            assert first != second
            s.sendall(b"\x04")
            assert recv_exact(s, 1) == b"\x0c"
            assert int(recv_exact(s, 12)) == daemon.pid
            s.sendall(b"\x03\x00\x08\x01A")  # no reply: the next request proves it
            s.sendall(b"\x01\x01")
            assert recv_exact(s, 2)[0] == 1


def test_pipelined_requests_in_one_write(daemon):
    with connect(daemon.socket) as s:
        s.sendall(b"\x00" + b"\x01\x05" + b"\x02\x07" + b"\x03\x00\x00\x02xy" + b"\x04" + b"\x02\x00" + b"\x01\x00")
        reply = recv_exact(s, 4 + 6 + 7 + 13 + 1)
        assert reply[4] == 5
        assert reply[17] == 12 and int(reply[18:30]) == daemon.pid
        assert reply[30] == 0  # 01 00: a count of zero, as asked


def test_requests_split_byte_by_byte(daemon):
    stream = b"\x02\xff\x01\x20\x00\x03\x00\x10\x03abc\x04"
    with connect(daemon.socket) as s:
        for i in range(len(stream)):
            s.sendall(stream[i:i + 1])
        reply = recv_exact(s, 255 + 33 + 4 + 13)
        assert reply[255] == 0x20


def test_zero_length_reads_keep_the_connection(daemon):
    with connect(daemon.socket) as s:
        s.sendall(b"\x02\x00")
        s.sendall(b"\x02\x03")
        assert len(recv_exact(s, 3)) == 3


def test_hundred_concurrent_blocking_readers(daemon):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def reader():
        try:
            with connect(daemon.socket) as s:
                for _ in range(20):
                    s.sendall(b"\x02\xff")
                    results.append(recv_exact(s, 255))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 2000
    assert len(set(results)) == 2000


def test_unknown_command_closes_only_that_connection(daemon):
    with connect(daemon.socket) as good, connect(daemon.socket) as bad:
        bad.sendall(b"\x02\x04\x09")
        assert len(recv_exact(bad, 4)) == 4  # requests before the bad byte are answered
        assert bad.recv(1) == b""  # then the connection closes
        good.sendall(b"\x02\x10")
        assert len(recv_exact(good, 16)) == 16
    daemon.wait_for_line("unknown command byte 0x09")


def test_client_disconnecting_mid_reply(daemon):
    for _ in range(5):
        s = connect(daemon.socket)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b"\x02\xff" * 2000)  # ~500 KiB of replies nobody will read
        s.close()  # linger 0: a reset in the middle of the daemon's send
    assert len(egd_read(daemon.socket, 255)) == 255
    assert daemon.proc.poll() is None


def test_idle_connection_outlives_every_timeout(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nrequest_timeout = 0.3\n")
    with connect(d.socket) as s:
        s.sendall(b"\x02\x01")
        recv_exact(s, 1)
        # Idle (nothing half-sent) for several request timeouts: it must stay.
        threading.Event().wait(1.2)
        s.sendall(b"\x02\x20")
        assert len(recv_exact(s, 32)) == 32


def test_half_received_request_times_out(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nrequest_timeout = 0.3\n")
    with connect(d.socket) as s:
        s.sendall(b"\x03\x00\x10\x05ab")  # 3 of the 5 data bytes never come
        assert s.recv(1) == b""
    d.wait_for_line("request incomplete")


def test_connection_limit(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 2\n")
    with connect(d.socket) as a, connect(d.socket) as b:
        for s in (a, b):
            s.sendall(b"\x02\x01")
            recv_exact(s, 1)
        with connect(d.socket) as c:
            assert c.recv(1) == b""  # closed at once
        a.sendall(b"\x02\x01")
        assert len(recv_exact(a, 1)) == 1
    # Freed slots are usable again.
    for _ in range(3):
        assert len(egd_read(d.socket, 8)) == 8


def test_socket_mode_and_removal(start_daemon, tmp_path):
    d = start_daemon("-m", "0660", config=QUIET)
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
    assert d.stop() == 0
    assert not os.path.exists(d.socket)


def test_default_mode_lets_every_local_user_read(start_daemon):
    d = start_daemon(config=QUIET)
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o666


def test_stale_socket_is_replaced(start_daemon, tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody answers on it
    d = start_daemon(config=QUIET, socket=path)
    assert len(egd_read(path, 4)) == 4
    assert d.stop() == 0


def test_second_daemon_refuses_and_kill_stops_the_first(start_daemon):
    first = start_daemon(config=QUIET)
    second = start_daemon(config=QUIET, socket=first.socket, ready=False)
    assert second.proc.wait(20) != 0
    assert "already serving" in second.log()
    assert len(egd_read(first.socket, 16)) == 16  # untouched
    kill = subprocess.run([sys.executable, "-m", "prngd", "--kill", first.socket], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert kill.returncode == 0, kill.stderr
    assert first.proc.wait(20) == 0
    assert not os.path.exists(first.socket)


def test_non_loopback_tcp_needs_allow_remote(start_daemon):
    d = start_daemon(config=QUIET, socket=f"0.0.0.0:{free_tcp_port()}", ready=False)
    assert d.proc.wait(20) == 1
    assert "not a loopback address" in d.log()


def test_prngd_tcp_spelling(start_daemon):
    port = free_tcp_port()
    d = start_daemon(config=QUIET, socket=f"tcp/localhost:{port}")
    assert len(egd_read(f"127.0.0.1:{port}", 10)) == 10
    assert d.stop() == 0


def test_detaches_like_prngd_and_writes_a_pidfile(tmp_path):
    sock, pidfile = str(tmp_path / "bg.sock"), str(tmp_path / "prngd.pid")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cfg = tmp_path / "quiet.conf"
    cfg.write_text(QUIET)
    # The parent returns only once the child serves.
    started = subprocess.run([sys.executable, "-m", "prngd", "-n", "-c", str(cfg), "-p", pidfile,
                              "--log-file", str(tmp_path / "prngd.log"), sock],
                             env=env, timeout=30, capture_output=True)
    assert started.returncode == 0, started.stderr
    pid = int(open(pidfile).read())
    try:
        assert len(egd_read(sock, 8)) == 8
        assert int(connect_pid(sock)) == pid
    finally:
        subprocess.run([sys.executable, "-m", "prngd", "-k", sock], env=env, timeout=60)
    assert not os.path.exists(sock)
    assert not os.path.exists(pidfile)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def answers(sock: str) -> bool:
    try:
        with connect(sock):
            return True
    except OSError:
        return False


def test_a_sigterm_to_the_waiting_parent_stops_the_detached_start(tmp_path):
    """`prngd` (detaching) signalled while it waits for its child to serve: a service manager or
    `timeout` stopping the start.  The signal goes on to the child, whose start stops quietly;
    nothing is left serving.  Signalled at random moments; the parent is stopped (SIGSTOP) while
    the signal is sent, so whether it was still waiting is known, not guessed."""
    import random
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cfg = tmp_path / "quiet.conf"
    cfg.write_text(QUIET)

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "prngd", "-n", "-c", str(cfg),
                                 "--log-file", str(tmp_path / f"prngd{i}.log"), str(tmp_path / f"bg{i}.sock")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # How long a whole detached start takes here (the faster of two: the first may compile
    # bytecode): the signals go at random moments within it.
    whole = float("inf")
    for i in (98, 99):
        t0 = time.monotonic()
        full = start(i)
        full.communicate(timeout=30)
        whole = min(whole, time.monotonic() - t0)
        assert full.returncode == 0
        subprocess.run([sys.executable, "-m", "prngd", "-k", str(tmp_path / f"bg{i}.sock")], env=env, timeout=60)
    waiting = 0
    for i in range(8):
        sock = str(tmp_path / f"bg{i}.sock")
        proc = start(i)
        time.sleep(random.uniform(0.3, 0.9) * whole)  # a random moment of the start is what is tested
        os.kill(proc.pid, signal.SIGSTOP)
        while (state := process_state(proc.pid)) not in ("T", "Z"):
            pass  # SIGSTOP is delivered at once; this only waits for the kernel to say so
        if state == "Z":  # too late: it had already handed over and exited
            subprocess.run([sys.executable, "-m", "prngd", "-k", sock], env=env, timeout=60)
            proc.communicate(timeout=30)
            continue
        waiting += 1
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
        # -SIGTERM only if it came before the command's first line (nothing was started then).
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert b"Traceback" not in err, err
        deadline = time.monotonic() + 20
        while answers(sock) or os.path.exists(sock):
            assert time.monotonic() < deadline, f"start {i}: the detached daemon kept serving:\n{err.decode()}"
            time.sleep(0.01)
    assert waiting >= 3, f"only {waiting} of 8 signals found the parent waiting"
def connect_pid(sock: str) -> str:
    with connect(sock) as s:
        s.sendall(b"\x04")
        return recv_exact(s, 1 + 12)[1:].decode()


def test_untrusted_write_is_mixed_but_not_credited(start_daemon):
    """A real second uid (nobody) writes; root's identical write is credited."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write as a second uid; see test_untrusted_peer_not_credited_unit")
    top = tempfile.mkdtemp(prefix="prngd-uid-")
    os.chmod(top, 0o755)
    d = start_daemon(config=QUIET, socket=os.path.join(top, "egd.sock"))
    before = egd_entropy(d.socket)
    write = b"\x03\x07\xf8\xff" + os.urandom(255)  # claims 2040 bits
    pid = os.fork()
    if pid == 0:  # child: become nobody, then write
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with connect(d.socket) as s:
                s.sendall(write + b"\x02\x01")
                recv_exact(s, 1)  # the write was taken before this reply
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert egd_entropy(d.socket) <= before
    with connect(d.socket) as s:
        s.sendall(write + b"\x02\x01")
        recv_exact(s, 1)  # the write was taken before this reply
    assert egd_entropy(d.socket) > before


def test_untrusted_peer_not_credited_unit():
    """Peers as identified at accept: only root and trusted_uids are credited, and an address only with trust_tcp."""
    from prngd.admission import Admission
    from prngd.config import Settings
    from prngd.connection import Connection, Counters, Service

    class RecordingPool:
        seeded, entropy_bits, generator_name = True, 300, "test"

        def __init__(self):
            self.adds = []

        def add(self, source, data, bits=0):
            self.adds.append((source, data, bits))

    def one_write(peer, trusted_uids, trust_tcp=False):
        pool = RecordingPool()
        svc = Service(pool, Counters(), b"", Admission(Settings(trusted_uids=trusted_uids, trust_tcp=trust_tcp)))
        conn = Connection(None, peer)
        conn.receive(b"\x03\x01\x00\x04abcd" + b"\x03\xff\xff\x01z", 0.0, svc)
        assert not conn.out  # writes have no reply
        return pool.adds

    untrusted = one_write(1234, [])
    assert [a[2] for a in untrusted] == [0, 0]
    assert [a[1] for a in untrusted] == [b"abcd", b"z"]  # mixed all the same
    assert [a[0] for a in untrusted] == ["egd-write-untrusted"] * 2
    assert [a[2] for a in one_write(1234, [1234])] == [32, 8]  # claims clamped to 8 x length
    assert [a[2] for a in one_write(0, [])] == [32, 8]
    # A TCP peer known only by its address: credited with trust_tcp alone; a uid never by trust_tcp.
    assert [a[2] for a in one_write("192.0.2.7", [])] == [0, 0]
    assert [a[2] for a in one_write("192.0.2.7", [], trust_tcp=True)] == [32, 8]
    assert [a[2] for a in one_write(1234, [], trust_tcp=True)] == [0, 0]
    assert [a[2] for a in one_write(None, [], trust_tcp=True)] == [0, 0]  # a Unix peer of unknown uid


def test_blocking_read_waits_for_seeding_without_holding_others(start_daemon):
    """Kernel source off and no seed: 02 waits, 01 answers 0, others are served; a trusted write seeds."""
    d = start_daemon(config=QUIET.replace("kernel_interval = 3600", "kernel = no"))
    d.wait_for_line("NOT seeded")
    waiter = connect(d.socket)
    waiter.sendall(b"\x02\x20")
    with connect(d.socket) as other:
        other.sendall(b"\x01\x20\x00\x04")
        assert recv_exact(other, 1) == b"\x00"  # PRNGD's answer while unseeded
        recv_exact(other, 4 + 13)
    waiter.settimeout(0.3)
    with pytest.raises(socket.timeout):
        waiter.recv(1)  # still waiting
    waiter.settimeout(20)
    with connect(d.socket) as root:  # the test runs as root or as the daemon's own user
        root.sendall(b"\x03\x08\x00\xff" + os.urandom(255))
    if os.geteuid() != 0:
        pytest.skip("a non-root daemon user is not trusted by default")
    assert len(recv_exact(waiter, 32)) == 32
    waiter.close()
    d.wait_for_line("pool seeded")


def test_sigterm_removes_socket_and_exits_zero(daemon):
    assert len(egd_read(daemon.socket, 1)) == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket)


def test_the_descriptor_limit_is_raised_for_max_connections_and_the_admin_handlers():
    code = """
import resource
from prngd.config import Settings
from prngd.server import Daemon
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))
class P: seeded = True
Daemon(Settings(max_connections=1024), pool=P()).raise_fd_limit()
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout.split()
    soft, hard = int(out[0]), int(out[1])
    wanted = 1024 + 8 + 64  # the EGD clients, the admin endpoint's handlers, the daemon's own files
    assert soft == (wanted if hard == -1 or hard >= wanted else hard)


def test_a_client_that_does_not_read_blocks_only_itself(daemon):
    count = 4000  # ~1 MB of replies: far more than the socket buffers hold
    slow = connect(daemon.socket)
    slow.sendall(b"\x02\xff" * count)
    # The daemon is now parked on this connection's full send buffer...
    for _ in range(20):
        assert len(egd_read(daemon.socket, 255)) == 255  # ...and everyone else is served.
    got = len(recv_exact(slow, 255 * count))  # every byte arrives once the client reads
    assert got == 255 * count
    slow.sendall(b"\x04")
    assert recv_exact(slow, 13)[0] == 12
    slow.close()
