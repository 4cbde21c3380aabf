"""The connection layer: its state machine without sockets, then the hostile clients against a real daemon."""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import time

import pytest

from conftest import connect, egd_entropy, egd_read, fork_as_nobody, free_tcp_port, recv_exact
from prngd import admin, config
from prngd.config import Settings
from prngd.admission import Admission
from prngd.connection import INF, OUTPUT_LIMIT, Connection, Counters, Service
from prngd.driver import EPOLLIN, EPOLLOUT, Driver

QUIET = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"


class CountingPool:
    """Output is a running byte counter, so every reply says which bytes it got and in what order."""

    generator_name = "test"

    def __init__(self, seeded: bool = True) -> None:
        self.seeded = seeded
        self.entropy_bits = 300
        self.served = 0
        self.adds: list[tuple[str, bytes, float]] = []

    def read(self, n: int) -> bytes:
        assert self.seeded, "read from an unseeded pool"
        out = bytes((self.served + i) & 0xFF for i in range(n))
        self.served += n
        return out

    def add(self, source, data, bits=0):
        self.adds.append((source, data, bits))


PID_REPLY = b"\x0c" + b"%12d" % 4242


def make_service(pool=None, **settings) -> Service:
    return Service(pool or CountingPool(), Counters(), PID_REPLY, Admission(Settings(**settings)))


def make_conn(pool=None, **settings) -> tuple[Connection, Service]:
    """A connection of uid 1000 and what its answers draw on: no driver, no socket."""
    return Connection(None, 1000), make_service(pool, **settings)


def drain(conn: Connection, svc: Service) -> bytes:
    """What a client reading everything would get."""
    got = bytearray()
    while conn.out:
        got += conn.take_output()
        conn.answer(svc)
    return bytes(got)


def receive(conn: Connection, data: bytes, now: float, svc: Service) -> None:
    """Bytes in, replies queued: a lone read's reply, returned at once, goes to `out` like the rest."""
    reply = conn.receive(data, now, svc)
    if reply is not None:
        conn.out.append(reply)
        conn.out_size += len(reply)


STREAM = (b"\x02\xff" + b"\x01\x20" + b"\x00" + b"\x03\x00\x10\x03abc" + b"\x04" + b"\x02\x00" + b"\x01\x00"
          + b"\x03\x00\x00\x00" + b"\x02\x07")
REPLY_SIZE = 255 + 33 + 4 + 13 + 1 + 7


def test_pipelined_requests_are_answered_in_order_in_one_batch():
    conn, svc = make_conn()
    receive(conn, STREAM, 0.0, svc)
    assert [len(r) for r in conn.out] == [255, 33, 4, 13, 1, 7]
    assert conn.interest() == EPOLLIN | EPOLLOUT and conn.deadline == INF
    reply = conn.take_output()
    assert reply[:255] == bytes(i & 0xFF for i in range(255))
    assert reply[255] == 0x20 and reply[256:288] == bytes((255 + i) & 0xFF for i in range(32))
    assert reply[288:292] == (300).to_bytes(4, "big")
    assert reply[292:305] == PID_REPLY
    assert reply[305] == 0  # 01 00: a count of zero, as asked
    assert svc.pool.adds == [("egd-write-untrusted", b"abc", 0)]  # 03 with L = 0 adds nothing
    assert svc.counters.requests == [1, 2, 3, 2, 1]
    assert conn.interest() == EPOLLIN and conn.out_size == 0  # all taken: nothing left to send


def test_a_stream_split_at_every_byte_gets_the_same_replies():
    whole, svc = make_conn()
    receive(whole, STREAM, 0.0, svc)
    expected = drain(whole, svc)
    for cut in range(1, len(STREAM)):
        conn, svc = make_conn()
        receive(conn, STREAM[:cut], 0.0, svc)
        receive(conn, STREAM[cut:], 0.0, svc)
        assert drain(conn, svc) == expected, cut
    conn, svc = make_conn()
    for i in range(len(STREAM)):
        receive(conn, STREAM[i:i + 1], float(i), svc)
    assert drain(conn, svc) == expected
    assert len(expected) == REPLY_SIZE and conn.decoder.pending == 0


def test_a_bad_byte_mid_stream_answers_what_came_before_then_closes():
    conn, svc = make_conn()
    receive(conn, b"\x02\x04\x00\x09\x02\x05", 0.0, svc)
    assert [len(r) for r in conn.out] == [4, 4]  # the two requests before the bad byte
    assert conn.closing and conn.interest() == EPOLLOUT  # no more reading: send, then close
    assert conn.error == "unknown command byte 0x09"  # for the caller to log
    assert svc.counters.protocol_errors == 1
    assert conn.deadline == INF


def test_a_slow_reader_fills_its_queue_to_the_bound_and_reading_stops():
    conn, svc = make_conn()
    count = 1000
    receive(conn, b"\x02\xff" * count, 0.0, svc)
    assert OUTPUT_LIMIT <= conn.out_size < OUTPUT_LIMIT + 255  # bounded, not 255 000 bytes
    assert conn.backlog and conn.interest() == EPOLLOUT  # read interest dropped while requests wait
    assert conn.deadline == INF  # nothing has failed to leave yet: no write clock
    first = conn.take_output()
    conn.queue_rest(first, 1000, 1.0)  # a partial send: the rest stays queued
    assert conn.out_size == len(first) - 1000 and conn.interest() == EPOLLOUT
    rest = conn.out[0]
    conn.answer(svc)  # refilled from the waiting requests, up to the bound again
    assert OUTPUT_LIMIT <= conn.out_size < OUTPUT_LIMIT + 255 and conn.interest() == EPOLLOUT
    got = first[:1000] + drain(conn, svc)
    assert len(got) == 255 * count
    assert got == bytes(i & 0xFF for i in range(255 * count))  # in order, none lost or repeated
    assert rest == got[1000:len(first)]
    assert not conn.backlog and conn.interest() == EPOLLIN  # all answered: reading again


def test_the_request_deadline_runs_from_the_first_byte_whatever_the_pace():
    conn, svc = make_conn(request_timeout=3.0)
    receive(conn, b"\x03\x00\x08\xff", 100.0, svc)
    assert conn.deadline == 103.0
    for t in range(1, 3):
        receive(conn, b"x", 100.0 + t, svc)  # a byte a second does not move it
        assert conn.deadline == 103.0
    assert conn.expired(102.9, svc.policy) is None
    assert conn.expired(103.0, svc.policy) == "request incomplete after 3s"


def test_a_completed_request_stops_the_clock_and_the_next_one_starts_its_own():
    conn, svc = make_conn(request_timeout=3.0)
    receive(conn, b"\x03\x00\x08\x02a", 10.0, svc)
    assert conn.deadline == 13.0
    receive(conn, b"b\x02", 12.0, svc)  # completes the write; a new request starts now
    assert conn.deadline == 15.0
    receive(conn, b"\x10", 14.0, svc)
    assert conn.deadline == INF and conn.expired(1e9, svc.policy) is None  # idle: kept forever (idle_timeout 0)
    assert len(drain(conn, svc)) == 16


def test_idle_timeout_closes_an_idle_connection():
    conn, svc = make_conn(idle_timeout=5.0)
    receive(conn, b"\x00", 1.0, svc)
    assert conn.deadline == 6.0 and conn.expired(6.0, svc.policy) == "idle"
    receive(conn, b"\x00", 4.0, svc)  # activity moves it
    assert conn.deadline == 9.0


def test_a_blocking_read_before_seeding_parks_only_its_connection():
    pool = CountingPool(seeded=False)
    conn, svc = make_conn(pool)
    other = Connection(None, 1001)
    receive(conn, b"\x00\x02\x10\x01\x05\x04", 0.0, svc)
    assert [len(r) for r in conn.out] == [4]  # the 00 before the 02 is answered at once
    assert conn.held is not None  # parked: for the driver to resume
    assert not conn.interest() & EPOLLIN  # parked: nothing more is read from it
    receive(other, b"\x01\x20\x00", 0.0, svc)  # meanwhile another client is served
    assert [bytes(r) for r in other.out] == [b"\x00", (300).to_bytes(4, "big")]
    pool.seeded = True
    conn.answer(svc)
    replies = [bytes(r) for r in conn.out]
    assert [len(r) for r in replies] == [4, 16, 6, 13]  # then the rest, in order
    assert replies[1] == bytes(range(16)) and replies[2] == b"\x05" + bytes(range(16, 21))
    assert conn.held is None and conn.interest() & EPOLLIN


def test_the_share_defaults_to_a_quarter_of_max_connections():
    assert Admission(Settings(max_connections=64)).share == 16
    assert Admission(Settings(max_connections=2)).share == 1
    assert Admission(Settings(max_connections=64, max_connections_per_uid=5)).share == 5
    assert Driver(Settings(max_connections=64), CountingPool(), Counters(), b"").share == 16  # as the status reports it


def test_a_negative_share_is_refused_in_one_line(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("[prngd]\nmax_connections_per_uid = -1\n")
    with pytest.raises(config.ConfigError, match="max_connections_per_uid"):
        config.load(str(cfg))


# ---------------------------------------------------------------- a real daemon

def test_a_trickler_is_closed_at_the_deadline_while_an_idle_connection_survives(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nrequest_timeout = 3\n")
    idle = connect(d.socket)
    idle.sendall(b"\x02\x01")
    recv_exact(idle, 1)
    trickler = connect(d.socket, timeout=15)
    trickler.sendall(b"\x03\x00\x08\xff")  # a write of 255 bytes, then one byte a second
    started = time.monotonic()
    closed_after = None
    sent = 0
    while sent < 20:
        try:
            # recv with a 1 s timeout is the trickler's pace: a byte whenever it times out.
            trickler.settimeout(1.0)
            if trickler.recv(1) == b"":
                closed_after = time.monotonic() - started
                break
        except socket.timeout:
            try:
                trickler.sendall(b"x")
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
        except ConnectionResetError:
            closed_after = time.monotonic() - started
            break
    trickler.close()
    assert closed_after is not None, "the trickler kept its connection"
    assert 2.5 < closed_after < 4.5, closed_after  # at the 3 s deadline, not reset by its bytes
    assert sent <= 4
    d.wait_for_line("request incomplete after 3s")
    idle.sendall(b"\x02\x20")  # idle for longer than request_timeout: still served
    assert len(recv_exact(idle, 32)) == 32
    idle.close()


def _hold_as_nobody(path: str, count: int, ready_w: int, done_r: int) -> None:
    """Child: become uid 65534, open `count` connections, report how many were served, hold them."""
    code = 1
    try:
        os.setgid(65534)
        os.setuid(65534)
        socks = []
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            socks.append(s)
        code = _report_served(socks, ready_w, done_r)
    finally:
        os._exit(code)


def _report_served(socks: list, w: int, done_r: int) -> int:
    """Child: a 02 01 on each connection; write how many were answered, then hold them until the parent has checked."""
    served = 0
    for s in socks:
        try:
            s.sendall(b"\x02\x01")
            served += len(s.recv(1)) == 1
        except OSError:
            pass  # refused: closed at once
    os.write(w, b"%d\n" % served)
    os.read(done_r, 1)
    return 0


def test_one_uid_cannot_take_every_slot(start_daemon):
    """uid 65534 opens 200 connections with max_connections 64: it gets its 16, root is served."""
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as a second uid")
    top = tempfile.mkdtemp(prefix="prngd-share-")
    os.chmod(top, 0o755)
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 64\n", socket=os.path.join(top, "egd.sock"))
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        _hold_as_nobody(d.socket, 200, ready_w, done_r)
    os.close(ready_w)
    os.close(done_r)
    root_socks = []
    try:
        with os.fdopen(ready_r) as f:
            served = int(f.readline())
        assert served == 16  # a quarter of 64
        assert len(egd_read(d.socket, 64)) == 64  # root is served while nobody holds its share
        line = d.wait_for_line("refusing connection from uid 65534")
        assert "it holds 16 of its 16" in line
        status = admin.get_status(config.admin_socket_for(d.socket))
        conns = status["connections"]
        assert conns["rejected_by_reason"] == {"global_cap": 0, "per_uid": 184}
        assert conns["rejected"] == 184 and conns["max_per_uid"] == 16
        # Rate-limited: a few lines for 184 refusals.
        assert sum("refusing connection" in x for x in d.lines) <= 3

        # Root is not held to the share, only to max_connections: 48 more fill it.
        for _ in range(48):
            s = connect(d.socket)
            s.sendall(b"\x02\x01")
            recv_exact(s, 1)
            root_socks.append(s)
        with connect(d.socket) as over:
            assert over.recv(1) == b""  # closed at once
        status = admin.get_status(config.admin_socket_for(d.socket))
        assert status["connections"]["rejected_by_reason"] == {"global_cap": 1, "per_uid": 184}
        code, _, body = admin.parse_response(admin.request(config.admin_socket_for(d.socket), "/metrics"))
        assert code == 200
        text = body.decode()
        assert 'prngd_connections_rejected_total{reason="global_cap"} 1' in text
        assert 'prngd_connections_rejected_total{reason="per_uid"} 184' in text
    finally:
        for s in root_socks:
            s.close()
        os.write(done_w, b"x")
        os.close(done_w)
        _, status_code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status_code) == 0


def test_the_refusal_summary_counts_what_was_not_logged(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 1\n")
    with connect(d.socket) as held:
        held.sendall(b"\x02\x01")
        recv_exact(held, 1)
        for _ in range(10):
            with connect(d.socket) as over:
                assert over.recv(1) == b""
    d.signal(signal.SIGUSR1)  # its statistics lines come after the refusals' on the same stream
    d.wait_for_line("statistics:")
    lines = [x for x in d.lines if "refusing connection from uid 0: all 1 connections in use" in x]
    assert len(lines) == 3  # the burst; the other 7 are summed up in the next window


def test_sigterm_lets_the_queued_replies_leave_whole(start_daemon):
    d = start_daemon(config=QUIET)
    slow = connect(d.socket, timeout=20)
    slow.sendall(b"\x02\xff" * 2000)  # ~500 KB of replies: far more than the socket buffers hold
    got = len(recv_exact(slow, 1000))
    d.signal(15)
    d.wait_for_line("received SIGTERM")
    while True:  # the client reads only now; the daemon waits (up to 2 s) for it
        try:
            chunk = slow.recv(65536)
        except ConnectionResetError:  # our unread requests were discarded with the socket
            break
        if not chunk:
            break
        got += len(chunk)
    slow.close()
    assert got > OUTPUT_LIMIT  # the queue was sent, not dropped
    assert got % 255 == 0  # and no reply was cut
    assert got < 255 * 2000  # no request was read after SIGTERM
    assert d.proc.wait(20) == 0


def _tcp_as_nobody(port: int, w: int, done_r: int) -> int:
    """Child, as uid 65534: two connections from each of 127.0.0.2..5; report how many were served, hold them."""
    socks = []
    for last in range(2, 6):
        for _ in range(2):
            s = socket.socket()  # not create_connection: the idna codec is out of this uid's reach
            s.settimeout(10)
            s.bind((f"127.0.0.{last}", 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
    return _report_served(socks, w, done_r)


def test_one_uid_cannot_take_every_slot_over_loopback_tcp(start_daemon):
    """uid 65534 connects from four loopback addresses with max_connections 8: it gets its share of 2,
    not all 8, and root's Unix client is served; root's TCP write is credited by its uid."""
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as a second uid")
    port = free_tcp_port()
    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 8\n", extra_sockets=[f"127.0.0.1:{port}"])
    done_r, done_w = os.pipe()

    def child(w: int) -> int:
        os.close(done_w)
        return _tcp_as_nobody(port, w, done_r)

    pid, r = fork_as_nobody(child)
    os.close(done_r)
    try:
        with os.fdopen(r) as f:
            served = int(f.readline())
        assert served == 2  # a quarter of 8, whatever the source addresses
        line = d.wait_for_line("refusing connection from uid 65534")
        assert "it holds 2 of its 2" in line
        assert len(egd_read(d.socket, 16)) == 16  # root is served over Unix
        status = admin.get_status(config.admin_socket_for(d.socket))
        assert status["connections"]["rejected_by_reason"] == {"global_cap": 0, "per_uid": 6}
        # Root over TCP is root: exempt from the share, and its writes credited without trust_tcp.
        before = egd_entropy(d.socket)
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)) as s:
            s.sendall(b"\x03\x08\x00\xff" + os.urandom(255) + b"\x02\x01")
            recv_exact(s, 1)  # the write was taken before this reply
        assert egd_entropy(d.socket) > before
    finally:
        os.close(done_w)  # the child reads EOF and exits
        _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    assert "sock_diag unavailable" not in d.log()


async def test_without_sock_diag_loopback_tcp_peers_count_by_address(tmp_path, monkeypatch, caplog):
    """Where sock_diag cannot answer, one warning, and each source address is one user (with its share)."""
    import errno

    import trio

    from prngd import sockdiag
    from prngd.egd import parse_address
    from prngd.listeners import Listener, bind_tcp

    def unavailable(self):
        raise sockdiag.Unavailable(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(sockdiag.SockDiag, "__init__", unavailable)
    [lsock] = bind_tcp(parse_address(f"127.0.0.1:{free_tcp_port()}"), False)
    port = lsock.getsockname()[1]
    driver = Driver(Settings(max_connections=8), CountingPool(), Counters(), PID_REPLY)

    def client(source: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
            s.sendall(b"\x02\x01")
            try:
                return s.recv(1)
            except ConnectionResetError:
                return b""

    held = []

    def hold(source: str) -> bytes:
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        s.sendall(b"\x02\x01")
        held.append(s)
        return s.recv(1)

    with caplog.at_level(logging.WARNING, logger="prngd"), trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [Listener("tcp", lsock, None, False)])
            for _ in range(2):  # a quarter of 8
                assert len(await trio.to_thread.run_sync(hold, "127.0.0.1")) == 1
            assert await trio.to_thread.run_sync(client, "127.0.0.1") == b""  # over its share: closed at once
            assert len(await trio.to_thread.run_sync(client, "127.0.0.2")) == 1  # another address, another user
            nursery.cancel_scope.cancel()
    for s in held:
        s.close()
    lsock.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("sock_diag unavailable" in m for m in messages) == 1, messages
    assert any("refusing connection from 127.0.0.1: it holds 2 of its 2" in m for m in messages), messages
    assert driver.counters.rejected_per_uid == 1


def test_refusals_beyond_the_burst_are_summed_up_in_the_next_window(monkeypatch, caplog):
    from prngd import driver

    clock = [1000.0]
    monkeypatch.setattr(driver.time, "monotonic", lambda: clock[0])
    limited = driver.RateLimitedLog(logging.getLogger("prngd.test"), burst=3,
                                         summary="%d more connections refused")
    with caplog.at_level(logging.WARNING, logger="prngd.test"):
        for i in range(10):
            limited.warning("refusing connection from uid %d", i)
        clock[0] += 10.0
        limited.warning("refusing connection from uid %d", 99)
    assert [r.getMessage() for r in caplog.records] == [
        "refusing connection from uid 0", "refusing connection from uid 1", "refusing connection from uid 2",
        "7 more connections refused", "refusing connection from uid 99"]


async def test_the_driver_wakes_parked_connections_and_closes_everything_when_cancelled(tmp_path):
    """The driver task in this process: a parked 02 goes on at wake(); cancelling it closes every connection."""
    import trio

    from prngd.listeners import Listener, bind_unix

    path = str(tmp_path / "egd.sock")
    listener = Listener(path, bind_unix(path, 0o600), path, True)
    pool = CountingPool(seeded=False)
    driver = Driver(Settings(), pool, Counters(), b"\x0c" + b"%12d" % 4242)

    async def client():
        s = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await s.connect(path)
        return s

    async def recv_exactly(s, n):
        buf = b""
        while len(buf) < n:
            chunk = await s.recv(n - len(buf))
            assert chunk, f"closed after {len(buf)} of {n} bytes"
            buf += chunk
        return buf

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [listener])
            parked = await client()
            await parked.send(b"\x00\x02\x10\x04")
            assert await recv_exactly(parked, 4) == (300).to_bytes(4, "big")
            other = await client()
            await other.send(b"\x01\x05")
            assert await recv_exactly(other, 1) == b"\x00"  # unseeded: PRNGD's answer, at once
            pool.seeded = True
            driver.wake()  # what the pool's on_seeded callback does
            assert await recv_exactly(parked, 16 + 13) == bytes(range(16)) + b"\x0c" + b"%12d" % 4242
            assert driver.counters.current == 2
            nursery.cancel_scope.cancel()
    for s in (parked, other):
        assert await s.recv(1) == b""  # closed by the driver as it unwound
        s.close()
    assert driver.counters.current == 0 and not driver.conns
    listener.sock.close()


def test_deadlines_of_closed_connections_do_not_pile_up():
    """idle_timeout with many short connections: the heap stays proportional to the open ones."""
    import select

    driver = Driver(Settings(idle_timeout=60.0), CountingPool(), Counters(), b"")
    driver._ep = select.epoll()
    kept = []
    try:
        for i in range(2000):
            ours, theirs = socket.socketpair()
            assert driver._admit(ours, 1000, float(i))  # silent: idle from its accept
            conn = driver.conns[ours.fileno()]
            if i % 100 == 0:
                kept.append((conn, theirs))  # a few stay open
            else:
                driver.close(conn)
                theirs.close()
        assert len(driver.heap) <= 2 * len(kept) + 65
        assert sorted(at for at, _, c in driver.heap if not c.closed) == [60.0 + 100 * k for k in range(len(kept))]
        driver._expire(60.0 + 1000)  # those opened at 0, 100, ..., 1000 have been idle 60 s by then
        assert [c.closed for c, _ in kept] == [True] * 11 + [False] * 9
    finally:
        for conn, theirs in kept:
            driver.close(conn)
            theirs.close()
        driver._ep.close()


def test_idle_timeout_closes_an_idle_connection_silently(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nidle_timeout = 0.5\n")
    with connect(d.socket) as s:
        s.sendall(b"\x02\x01")
        recv_exact(s, 1)
        started = time.monotonic()
        assert s.recv(1) == b""  # closed by the daemon once idle for 0.5 s
        assert 0.4 < time.monotonic() - started < 5
    assert len(egd_read(d.socket, 8)) == 8
    assert "closing connection" not in d.log()  # an idle close is not an error


@pytest.mark.parametrize("idle_timeout", [0.0, 30.0])
def test_the_shortcut_for_a_lone_read_answers_as_the_decoder_does(idle_timeout):
    """Connection.receive answers a lone `01 n`/`02 n` without the decoder; through the driver and a
    socket, replies, counters and deadlines match the decoder's path (feed, answer, set_deadline),
    including a read whose first byte came in an earlier chunk."""
    import select

    # b"\x01\x02" after a lone b"\x02" is `02 01` and half of the next read, not a `01 02`.
    chunks = [b"\x02\xff", b"\x01\x20", b"\x02\x00", b"\x01\x00", b"\x00", b"\x02", b"\x01\x02", b"\x07",
              b"\x01\x07", b"\x02\x01", b"\x04\x02\x03"]
    reference, rsvc = make_conn(idle_timeout=idle_timeout)
    driver = Driver(Settings(idle_timeout=idle_timeout), CountingPool(), Counters(), PID_REPLY)
    driver.svc.seeded = True
    driver._ep = select.epoll()
    ours, theirs = socket.socketpair()
    try:
        assert driver._admit(ours, 1000, 99.0)
        conn = driver.conns[ours.fileno()]
        for i, chunk in enumerate(chunks):
            now = 100.0 + i
            reference.decoder.feed(chunk)
            reference.answer(rsvc)
            reference.set_deadline(now, rsvc.policy)
            want = drain(reference, rsvc)
            theirs.sendall(chunk)
            reply = driver._readable(conn, now)
            if reply is not None:
                driver._send(conn, reply, now)
            got = b""
            while len(got) < len(want):
                got += theirs.recv(4096)
            assert got == want, f"chunk {i} {chunk.hex()}"
            assert (conn.deadline, conn.request_since) == (reference.deadline, reference.request_since), f"chunk {i}"
        assert driver.counters.requests == rsvc.counters.requests
        assert driver.counters.bytes_served == rsvc.counters.bytes_served
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1)  # nothing more than the reference's replies
    finally:
        theirs.close()
        driver.close(conn)
        driver._ep.close()


def test_tcp_connections_are_accepted_with_nagle_off_bound_or_inherited():
    """TCP_NODELAY is set once on the listener (bound by us, or handed over by systemd) and every accepted socket has it."""
    from prngd.egd import parse_address
    from prngd.listeners import bind_tcp, open_listeners

    bound = bind_tcp(parse_address(f"127.0.0.1:{free_tcp_port()}"), False)
    handed = socket.socket()
    handed.bind(("127.0.0.1", 0))
    handed.listen()
    inherited = [lst.sock for lst in open_listeners(Settings(), [(handed, "egd")])]
    for listener in bound + inherited:
        listener.setblocking(True)
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        for s in (accepted, client, listener):
            s.close()


async def test_a_turns_replies_leave_together_and_a_short_send_queues_the_rest(tmp_path):
    """More ready clients than SEND_BATCH in one turn: each gets exactly its reply; one that reads
    nothing until it has asked for more than the kernel holds gets every byte, in order."""
    import trio

    from prngd.driver import SEND_BATCH
    from prngd.listeners import Listener, bind_unix

    path = str(tmp_path / "egd.sock")
    listener = Listener(path, bind_unix(path, 0o600), path, True)
    class NumberedPool(CountingPool):
        """Each reply starts with its number: which read made it, and in what order each client got them."""

        def read(self, n: int) -> bytes:
            self.served += 1
            return (self.served - 1).to_bytes(4, "big") + bytes(n - 4)

    driver = Driver(Settings(), NumberedPool(), Counters(), b"")
    owed = 1000 * 255  # to the slow client: more than a Unix socket's send buffer (~208 KiB)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [listener])
            clients = []
            for _ in range(3 * SEND_BATCH + 1):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.sendall(b"\x00")
                clients.append(s)
            for s in clients:  # answered, so accepted: the reads below come in the driver's turns
                assert await trio.to_thread.run_sync(recv_exact, s, 4) == (300).to_bytes(4, "big")
            slow = clients.pop()
            for s in clients:
                s.sendall(b"\x02\xff")
            slow.sendall(b"\x02\xff" * (owed // 255))
            got = [await trio.to_thread.run_sync(recv_exact, s, 255) for s in clients]
            rest = await trio.to_thread.run_sync(recv_exact, slow, owed)
            nursery.cancel_scope.cancel()
    numbers = [int.from_bytes(reply[:4], "big") for reply in got]
    slow_numbers = [int.from_bytes(rest[i:i + 4], "big") for i in range(0, owed, 255)]
    assert slow_numbers == sorted(slow_numbers)  # in the order asked
    assert sorted(numbers + slow_numbers) == list(range(len(clients) + owed // 255))  # each reply once
    assert driver.counters.requests[2] == len(clients) + owed // 255
    for s in clients + [slow]:
        s.close()
    listener.sock.close()


# ---------------------------------------------------------------- every connection has a deadline

def test_idle_timeout_closes_a_connection_that_never_sends_a_byte(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nidle_timeout = 1\n")
    with connect(d.socket, timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the daemon, not by our 10 s timeout
        assert 0.8 < time.monotonic() - started < 6
    assert len(egd_read(d.socket, 8)) == 8
    assert "closing connection" not in d.log()  # an idle close is not an error


def test_a_client_that_never_reads_is_closed_after_request_timeout_without_progress(start_daemon):
    d = start_daemon(config=QUIET + "[prngd]\nrequest_timeout = 1\n")
    greedy = connect(d.socket, timeout=10)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    count = 4000  # ~1 MB of replies: far more than the socket buffers hold
    greedy.sendall(b"\x02\xff" * count)
    started = time.monotonic()
    d.wait_for_line("closing connection: replies unread for 1s")
    assert 0.8 < time.monotonic() - started < 10
    status = admin.get_status(config.admin_socket_for(d.socket))
    assert status["connections"]["current"] == 0  # its slot is free
    got = 0
    try:
        while chunk := greedy.recv(65536):
            got += len(chunk)
    except ConnectionResetError:
        pass  # our unread requests were discarded with the socket
    greedy.close()
    assert got < 255 * count  # cut off, not served
    assert len(egd_read(d.socket, 8)) == 8


def test_the_write_clock_restarts_with_every_progress():
    conn, svc = make_conn(request_timeout=2.0)
    receive(conn, b"\x02\xff" * 300, 10.0, svc)
    assert conn.deadline == INF  # replies queued, none has failed to leave yet
    data = conn.take_output()
    conn.queue_rest(data, 0, 11.0)  # nothing left: the clock starts
    conn.set_deadline(11.0, svc.policy)
    assert conn.deadline == 13.0 and conn.expired(13.0, svc.policy) == "replies unread for 2s"
    data = conn.take_output()
    conn.queue_rest(data, 0, 12.5)  # still nothing: it keeps its start
    conn.set_deadline(12.5, svc.policy)
    assert conn.deadline == 13.0
    data = conn.take_output()
    conn.queue_rest(data, 1000, 12.9)  # progress
    conn.set_deadline(12.9, svc.policy)
    assert conn.deadline == 14.9 and conn.expired(13.0, svc.policy) is None
    drain(conn, svc)
    conn.set_deadline(15.0, svc.policy)
    assert conn.deadline == INF  # all read: no clock


async def test_shutdown_may_come_before_the_driver_runs_or_after_it_ends(tmp_path):
    """stop_accepting() and drain() at any moment: before run() has its epoll set (the listener
    already closed, as the daemon's shutdown does), and after run() has closed it."""
    import trio
    import trio.testing

    from prngd.listeners import Listener, bind_unix

    path = str(tmp_path / "egd.sock")
    listener = Listener(path, bind_unix(path, 0o600), path, True)
    driver = Driver(Settings(), CountingPool(), Counters(), PID_REPLY)
    driver.stop_accepting()
    listener.sock.close()
    await driver.drain(0.5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [listener])
            await trio.testing.wait_all_tasks_blocked()
            assert not driver.listeners and driver.counters.current == 0
            nursery.cancel_scope.cancel()
    driver.stop_accepting()
    await driver.drain(0.5)

    # Started normally, stopped after its end: nothing is touched twice.
    path2 = str(tmp_path / "egd2.sock")
    listener = Listener(path2, bind_unix(path2, 0o600), path2, True)
    driver = Driver(Settings(), CountingPool(), Counters(), PID_REPLY)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [listener])
            await trio.testing.wait_all_tasks_blocked()
            assert driver.listeners
            nursery.cancel_scope.cancel()
    driver.stop_accepting()
    listener.sock.close()
    await driver.drain(0.5)
    assert not driver.listeners


async def test_one_busy_client_leaves_the_other_tasks_their_turn(tmp_path):
    """The driver waits for one client's next request in its own epoll set, but only briefly: while
    that client asks without pause, trio's timers and worker threads still come through."""
    import threading

    import trio

    from prngd.listeners import Listener, bind_unix

    path = str(tmp_path / "egd.sock")
    listener = Listener(path, bind_unix(path, 0o600), path, True)
    driver = Driver(Settings(), CountingPool(), Counters(), PID_REPLY)
    stop = threading.Event()
    served = []

    def busy_client():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            count = 0
            while not stop.is_set():
                s.sendall(b"\x02\x20")
                recv_exact(s, 32)
                count += 1
            served.append(count)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, [listener])
            thread = threading.Thread(target=busy_client)
            thread.start()
            while driver.counters.requests[2] < 200:
                await trio.sleep(0.001)
            started = trio.current_time()
            for _ in range(20):
                await trio.sleep(0.005)  # a timer of another task
                await trio.to_thread.run_sync(lambda: None)  # a worker thread's result coming back
            took = trio.current_time() - started
            ticks = driver.counters.requests[2]
            stop.set()
            await trio.to_thread.run_sync(thread.join)
            nursery.cancel_scope.cancel()
    listener.sock.close()
    assert took < 2.0, took  # 20 x 5 ms, plus at most a short wait in epoll each
    assert ticks > 200 and served and served[0] > 200  # the client was served all along


def test_busy_poll_spins_only_where_another_cpu_can_run_the_client(monkeypatch):
    """busy_poll is microseconds of spin; none when set to 0, and none without two usable CPUs."""
    from prngd import driver as drv

    monkeypatch.setattr(drv, "usable_cpus", lambda: 2)
    assert drv.busy_window(Settings(busy_poll=50)) == pytest.approx(50e-6)
    assert drv.busy_window(Settings(busy_poll=0)) == 0.0
    monkeypatch.setattr(drv, "usable_cpus", lambda: 1.5)  # e.g. two CPUs, a quota of 1.5
    assert drv.busy_window(Settings(busy_poll=50)) == 0.0
    d = Driver(Settings(busy_poll=50), CountingPool(), Counters(), PID_REPLY)
    assert d.busy == 0.0
    monkeypatch.setattr(drv, "usable_cpus", lambda: 2)
    d.configure(Settings(busy_poll=200))  # SIGHUP
    assert d.busy == pytest.approx(200e-6)


class ScriptedEpoll:
    """epoll's poll(), answering from a script; records each call's timeout (0: a busy poll)."""

    def __init__(self, script):
        self.script = list(script)
        self.timeouts: list[float] = []

    def poll(self, timeout=-1, maxevents=-1):
        self.timeouts.append(timeout)
        return self.script.pop(0) if self.script else []


def one_client_driver(monkeypatch, busy_poll: int, script) -> tuple[Driver, Connection, ScriptedEpoll, list]:
    import trio

    from prngd import driver as drv

    monkeypatch.setattr(drv, "usable_cpus", lambda: 2)
    monkeypatch.setattr(trio, "current_time", time.perf_counter)  # _serve_one outside trio.run
    d = Driver(Settings(busy_poll=busy_poll), CountingPool(), Counters(), PID_REPLY)
    conn = Connection(None, 1000)
    conn.fd = 7
    d.conns[7] = conn
    d._ep = ScriptedEpoll(script)
    served = []
    monkeypatch.setattr(d, "_serve", lambda c, now: served.append(c))
    return d, conn, d._ep, served


def test_a_lone_clients_next_request_is_caught_by_the_busy_poll_without_sleeping(monkeypatch):
    mine = (7, EPOLLIN)
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [[], [], [mine], [], [mine]])
    events, n = d._serve_one(conn, time.perf_counter() + 10, 2)
    assert (events, n) == (None, 2) and served == [conn, conn]
    assert ep.timeouts == [0, 0, 0, 0, 0]  # both came while it spun: it never slept


def test_after_the_busy_poll_the_driver_sleeps_in_epoll_and_other_descriptors_end_the_wait(monkeypatch):
    mine, other = (7, EPOLLIN), (9, EPOLLIN)
    d, conn, ep, served = one_client_driver(monkeypatch, 1, [])  # 1 us: the spin runs out at once
    events, n = d._serve_one(conn, time.perf_counter() + 10, 5)
    assert (events, n) == (None, 0) and not served
    assert ep.timeouts[-1] > 0 and set(ep.timeouts[:-1]) <= {0}  # spun, then slept until `until`
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [[], [other]])
    assert d._serve_one(conn, time.perf_counter() + 10, 5) == ([other], 0)  # the turn handles it
    d, conn, ep, served = one_client_driver(monkeypatch, 0, [[mine]])
    assert d._serve_one(conn, time.perf_counter() + 10, 1) == (None, 1)
    assert ep.timeouts[0] > 0  # busy_poll 0: straight to sleep in epoll


def test_with_a_second_client_connected_the_driver_does_not_spin(monkeypatch):
    """Sleeping lets several clients' requests gather into one turn; a spin would take them one by one."""
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [[(7, EPOLLIN)]])
    d.conns[8] = Connection(None, 1001)
    assert d._serve_one(conn, time.perf_counter() + 10, 1) == (None, 1)
    assert ep.timeouts[0] > 0


def test_the_busy_poll_never_outlasts_the_window_the_turn_allows(monkeypatch):
    """_spin_until gave `until` (other tasks runnable: now): the spin stops there, busy_poll or not."""
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [])
    t0 = time.perf_counter()
    assert d._serve_one(conn, t0, 5) == (None, 0)
    assert ep.timeouts == []  # nothing left: not one poll


def test_the_busy_poll_returns_the_first_events_and_stops_at_its_window_or_the_turns(monkeypatch):
    other = (9, EPOLLIN)
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [[], [], [other]])
    assert d._busy_poll(time.perf_counter() + 10) == [other] and ep.timeouts == [0, 0, 0]
    d, conn, ep, served = one_client_driver(monkeypatch, 1000, [])
    t0 = time.perf_counter()
    assert d._busy_poll(t0 + 10) is None
    assert 1e-3 <= time.perf_counter() - t0 < 0.5  # busy_poll 1000 us of spinning, then it gives up
    assert d._busy_poll(time.perf_counter() - 1) is None and len(ep.timeouts) > 1
    n = len(ep.timeouts)
    assert d._busy_poll(time.perf_counter()) is None and len(ep.timeouts) == n  # the turn's window is over
