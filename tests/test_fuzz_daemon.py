"""Stateful fuzzing of a real daemon over its sockets, against a model of the replies it owes.

One `python -m prngd` process per test serves a Unix socket and a loopback TCP
port; each example opens fresh connections on it (at most MAX_OPEN at once).
They send random interleavings of valid requests (whole, pipelined in one
write, cut inside a header or data and finished later between other
connections' traffic, one byte per send), unknown command bytes (after valid
requests, sometimes with bytes after them) and abrupt closes.  The model
knows, for every connection, the shape of each reply due (only what the wire
promises: README "The protocol as prngd serves it") and checks the framing
exactly: every byte due arrives, in order, with the right shape (04 the
daemon's pid, 00 within 1..pool_bits, 01's count byte N), and nothing more (a
`04` is sent as a delimiter before each check, and a graceful close must end
in EOF).  Random replies of 16 bytes or more must never repeat.

- `test_fuzz_daemon_stateful` (CI): a hypothesis RuleBasedStateMachine, a few
  hundred examples against one daemon.
- `test_fuzz_daemon_long`: PRNGD_FUZZ_INPUTS=1000000 runs a plain driver loop
  over the same actions, drawn from a seeded `random.Random`
  (PRNGD_FUZZ_SEED, default 11): hypothesis is far too slow for 1M inputs.  It
  reports the inputs sent, framing errors (must be 0), that the daemon is
  alive and its RSS growth (must stay under 20 MB).

The test depends on nothing of prngd but the wire, so it stays valid whatever
drives the connections inside the daemon.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections import Counter, deque

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from conftest import free_tcp_port

POOL_BITS = 4096  # the estimate (00) is never 0 once seeded and never above pool_bits
CONFIG = f"""
[pool]
pool_bits = {POOL_BITS}

[sources]
# Commands only cost CPU on a shared machine; the wire does not depend on them.
external_commands = no
"""

MAX_OPEN = 16  # a per-uid connection share is coming: stay well inside it
UNREAD_LIMIT = 32 * 1024  # read before more replies pile up: the daemon stops reading while its sends block
REPLY_TIMEOUT = 10.0  # a blocking read that takes longer counts as missing bytes (as conftest.connect waits)
FRESH_PREFIX = 16  # random replies this long or longer must never repeat

# Reply shapes the model expects (None: the request has no reply).
LEVEL, NONBLOCKING, BLOCKING, PID, CLOSE = "level", "nonblocking", "blocking", "pid", "close"


def level_request():
    return b"\x00", (LEVEL, 4)


def nonblocking_request(n: int):
    return bytes((1, n)), (NONBLOCKING, 1 + n)


def blocking_request(n: int):
    return bytes((2, n)), ((BLOCKING, n) if n else None)  # 02 00: nothing at all


def write_request(bits: int, data: bytes):
    return bytes((3, bits >> 8, bits & 0xFF, len(data))) + data, None


def pid_request():
    return b"\x04", (PID, 13)


UNKNOWN_COMMANDS = range(5, 256)


class FramingError(AssertionError):
    """The daemon's replies on one connection differ from what the model expects."""


class Conn:
    """One client connection and what the model knows about it."""

    def __init__(self, sock: socket.socket, unix: bool, name: str):
        self.sock = sock
        self.unix = unix
        self.name = name
        self.outbox = bytearray()  # queued bytes not yet sent
        self.items: deque = deque()  # (end offset in the stream, shape) of queued requests
        self.queued = 0  # stream offset after the last queued byte
        self.sent = 0  # stream offset after the last sent byte
        self.due: list = []  # shapes of fully sent requests whose replies are unread
        self.due_bytes = 0
        self.doomed = False  # an unknown command byte is queued: the daemon closes after it
        self.garbage = False  # bytes follow it (the daemon may close with them unread)
        self.bad_byte_sent = False
        self.peer_closed = False  # a send after the unknown byte found the connection closed
        self.partial_since = None  # long driver: the step its unsent bytes began to wait


class Fuzzer:
    """The model and the actions, shared by the hypothesis machine and the long driver.

    Every method that reads checks what it reads and raises FramingError on
    any difference; the caller decides whether that ends the run.
    """

    def __init__(self, unix_path: str, tcp_address: tuple[str, int], pid: int):
        self.unix_path = unix_path
        self.tcp_address = tcp_address
        self.pid = pid
        self.pid_reply = b"\x0c" + b"%12d" % pid
        self.conns: list[Conn] = []
        self.inputs = 0  # requests and malformed chunks queued
        self.opened = 0
        self.seen: set[bytes] = set()
        self.stats: Counter = Counter()  # what the run did, for its report

    # ------------------------------------------------------------ connections

    def open(self, unix: bool) -> Conn:
        if unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(REPLY_TIMEOUT)
            sock.connect(self.unix_path)
        else:
            sock = socket.create_connection(self.tcp_address, timeout=REPLY_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keep split sends split
        self.opened += 1
        conn = Conn(sock, unix, f"{'unix' if unix else 'tcp'}#{self.opened}")
        self.conns.append(conn)
        return conn

    def _drop(self, conn: Conn) -> None:
        conn.sock.close()
        if conn in self.conns:
            self.conns.remove(conn)

    def abandon(self, conn: Conn) -> None:
        """Vanish without reading, possibly mid-request: the daemon must not care."""
        self.stats["abandoned"] += 1
        self._drop(conn)

    def writable(self) -> list[Conn]:
        return [c for c in self.conns if not c.doomed]

    # ------------------------------------------------------------ sending

    def queue(self, conn: Conn, requests) -> None:
        assert not conn.doomed
        for data, shape in requests:
            conn.outbox += data
            conn.queued += len(data)
            conn.items.append((conn.queued, shape))
            self.inputs += 1

    def queue_unknown(self, conn: Conn, prefix, bad: int, garbage: bytes) -> None:
        """Valid requests, then an unknown command byte (and maybe bytes after it)."""
        self.queue(conn, prefix)
        if not conn.unix:
            # Over TCP a close with unread bytes is a reset, which may discard
            # replies still queued in the kernel: no trailing bytes there.
            garbage = b""
        chunk = bytes((bad,)) + garbage
        conn.outbox += chunk
        conn.items.append((conn.queued + 1, (CLOSE, 0)))
        conn.queued += len(chunk)
        conn.doomed = True
        conn.garbage = bool(garbage)
        self.inputs += 1

    def send(self, conn: Conn, sizes) -> None:
        """Send the outbox's next bytes in writes of these sizes (what is left stays queued).

        A write whose replies would pass UNREAD_LIMIT is split at a request
        boundary, and what is due is read first: the daemon stops reading
        while its replies do not fit in the socket buffers, and so would we.
        """
        sizes = deque(sizes)
        while sizes:
            size = sizes.popleft()
            if not conn.outbox or conn not in self.conns:
                return
            fits, owed = self._fitting(conn, size)
            if fits < size:
                sizes.appendleft(size - fits)
                size = fits
            if conn.due_bytes + owed > UNREAD_LIMIT and not conn.bad_byte_sent:
                self.read_due(conn)
            chunk = bytes(conn.outbox[:size])
            try:
                if not conn.peer_closed:
                    conn.sock.sendall(chunk)
                    self.stats["writes"] += 1
            except OSError as e:
                if not (conn.bad_byte_sent and isinstance(e, (BrokenPipeError, ConnectionResetError))):
                    self._fail(conn, f"sending {len(chunk)} bytes: {e!r}")
                # The daemon closed after the unknown byte: the rest is not for
                # it.  The model goes on as if sent, so that what happens next
                # does not depend on when the daemon closed (hypothesis replays).
                conn.peer_closed = True
            del conn.outbox[:size]
            conn.sent += len(chunk)
            while conn.items and conn.items[0][0] <= conn.sent:
                _, shape = conn.items.popleft()
                if shape is None:
                    continue
                if shape[0] == CLOSE:
                    conn.bad_byte_sent = True
                else:
                    conn.due.append(shape)
                    conn.due_bytes += shape[1]

    def _fitting(self, conn: Conn, size: int) -> tuple[int, int]:
        """How much of a `size`-byte write to send (at least one request) and the reply bytes it makes due."""
        end = conn.sent + size
        owed = 0
        for item_end, shape in conn.items:
            if item_end > end:
                break
            reply = shape[1] if shape else 0
            if owed and owed + reply > UNREAD_LIMIT:
                return item_end - 1 - conn.sent, owed  # stop one byte short of this request's end
            owed += reply
        return size, owed

    def send_all(self, conn: Conn) -> None:
        self.send(conn, [len(conn.outbox)])

    # ------------------------------------------------------------ reading and checking

    def _fail(self, conn: Conn, what: str) -> None:
        self._drop(conn)
        raise FramingError(f"{conn.name}: {what}")

    def read_due(self, conn: Conn) -> None:
        """Read exactly the replies due and check each; after an unknown byte, then EOF."""
        want = conn.due_bytes
        # With a 04 last, its reply ends what the daemon will send: arriving
        # early (not where some 04's reply is due), it shows bytes missing at
        # once rather than after a timeout.
        delimited = bool(conn.due) and conn.due[-1][0] == PID
        pid_ends, end = set(), 0
        for kind, size in conn.due:
            end += size
            if kind == PID:
                pid_ends.add(end)
        data = bytearray()
        try:
            while len(data) < want:
                chunk = conn.sock.recv(want - len(data))
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
                if delimited and len(data) not in pid_ends and data.endswith(self.pid_reply):
                    raise ConnectionError("the delimiter's reply came early")
        except (ConnectionError, TimeoutError, OSError) as e:
            self._fail(conn, f"{want - len(data)} of {want} reply bytes missing "
                             f"({[s[0] for s in conn.due]}): {e!r}")
        data = bytes(data)
        pos = 0
        for kind, size in conn.due:
            reply = data[pos:pos + size]
            pos += size
            if kind == PID:
                if reply != self.pid_reply:
                    self._fail(conn, f"04 answered {reply!r}, expected {self.pid_reply!r}")
            elif kind == LEVEL:
                bits = int.from_bytes(reply, "big")
                if not 0 < bits <= POOL_BITS:
                    self._fail(conn, f"00 answered {bits} bits, outside 1..{POOL_BITS}")
            elif kind == NONBLOCKING:
                if reply[0] != size - 1:
                    self._fail(conn, f"01 {size - 1} answered the count byte {reply[0]}")
                self._fresh(conn, reply[1:])
            else:
                self._fresh(conn, reply)
        self.stats["replies"] += len(conn.due)
        self.stats["reply_bytes"] += want
        conn.due.clear()
        conn.due_bytes = 0
        if conn.bad_byte_sent:
            self._expect_end(conn, reset_allowed=conn.garbage)

    def _fresh(self, conn: Conn, random_bytes: bytes) -> None:
        if len(random_bytes) >= FRESH_PREFIX:
            prefix = random_bytes[:FRESH_PREFIX]
            if prefix in self.seen:
                self._fail(conn, f"random bytes served twice: {prefix.hex()}")
            self.seen.add(prefix)

    def _expect_end(self, conn: Conn, reset_allowed: bool) -> None:
        """Nothing more may come: the next read must find the end of the stream."""
        try:
            extra = conn.sock.recv(4096)
        except ConnectionResetError:
            if not reset_allowed:
                self._fail(conn, "reset where a clean EOF was due")
            extra = b""
        except (TimeoutError, OSError) as e:
            self._fail(conn, f"no EOF: {e!r}")
        if extra:
            self._fail(conn, f"{len(extra)} bytes beyond every reply due: {extra[:16].hex()}")
        self.stats["closed_by_unknown_command" if conn.doomed else "closed_gracefully"] += 1
        self._drop(conn)

    def check(self, conn: Conn) -> None:
        """Send all that is queued plus a 04 delimiter; exactly the replies due must come back."""
        if not conn.doomed:
            self.queue(conn, [pid_request()])
        self.send_all(conn)
        self.read_due(conn)

    def close(self, conn: Conn) -> None:
        """Graceful close: a delimiter, shutdown for writing, the replies, then EOF and nothing else."""
        if conn.doomed:
            self.check(conn)  # ends in the daemon's close
            return
        self.queue(conn, [pid_request()])
        self.send_all(conn)
        conn.sock.shutdown(socket.SHUT_WR)  # the replies to everything sent are still owed
        self.read_due(conn)
        self._expect_end(conn, reset_allowed=False)

    def close_all(self) -> None:
        for conn in list(self.conns):
            self.close(conn)

    def alive(self) -> None:
        """A fresh connection is answered: the daemon survived everything before."""
        self.close(self.open(unix=True))


def sizes_for(kind: str, arg, outbox_len: int) -> list[int]:
    """How the next bytes go out: all in one write, all but the last few (a request cut
    inside its header or data), one byte per send, or chosen chunks."""
    if kind == "all":
        return [outbox_len]
    if kind == "cut":
        return [outbox_len - arg] if outbox_len > arg else []
    if kind == "slow":
        return [1] * min(arg, outbox_len)
    return list(arg)


# ---------------------------------------------------------------- the daemon under test


@pytest.fixture
def fuzz_target(start_daemon):
    port = free_tcp_port()
    d = start_daemon(config=CONFIG, extra_sockets=[f"127.0.0.1:{port}"])
    d.tcp_address = ("127.0.0.1", port)
    yield d
    assert d.proc.poll() is None, "the daemon died under the fuzzer:\n" + d.log()
    assert d.stop() == 0, d.log()


# ---------------------------------------------------------------- short mode: hypothesis

requests_st = st.one_of(
    st.builds(level_request),
    st.builds(nonblocking_request, st.integers(0, 255)),
    st.builds(blocking_request, st.integers(0, 255)),
    st.builds(write_request, st.integers(0, 0xFFFF), st.binary(max_size=255)),
    st.builds(pid_request),
)
sizes_st = st.one_of(
    st.tuples(st.just("all"), st.none()),
    st.tuples(st.just("cut"), st.integers(1, 5) | st.integers(6, 260)),
    st.tuples(st.just("slow"), st.integers(1, 40)),
    st.tuples(st.just("chunks"), st.lists(st.integers(1, 300), min_size=1, max_size=6)),
)


class DaemonMachine(RuleBasedStateMachine):
    target = None  # the Daemon, set by the test before running the machine

    def __init__(self):
        super().__init__()
        d = self.target
        self.fz = Fuzzer(d.socket, d.tcp_address, d.pid)
        self.failed = False

    def _run(self, action, *args):
        try:
            action(*args)
        except BaseException:
            self.failed = True
            raise

    def _pick(self, data, conns):
        return conns[data.draw(st.integers(0, len(conns) - 1), label="connection")]

    @precondition(lambda self: len(self.fz.conns) < MAX_OPEN)
    @rule(unix=st.booleans())
    def open_connection(self, unix):
        self._run(self.fz.open, unix)

    @precondition(lambda self: self.fz.writable())
    @rule(data=st.data(), requests=st.lists(requests_st, min_size=1, max_size=24), sizes=sizes_st)
    def send_requests(self, data, requests, sizes):
        """Valid requests: whole, pipelined in one write, split, or trickled (what is left stays queued)."""
        conn = self._pick(data, self.fz.writable())
        self._run(self.fz.queue, conn, requests)
        self._run(self.fz.send, conn, sizes_for(*sizes, len(conn.outbox)))

    @precondition(lambda self: self.fz.writable())
    @rule(data=st.data(), prefix=st.lists(requests_st, max_size=6), bad=st.sampled_from(UNKNOWN_COMMANDS),
          garbage=st.binary(max_size=12), sizes=sizes_st)
    def send_unknown_command(self, data, prefix, bad, garbage, sizes):
        conn = self._pick(data, self.fz.writable())
        self._run(self.fz.queue_unknown, conn, prefix, bad, garbage)
        self._run(self.fz.send, conn, sizes_for(*sizes, len(conn.outbox)))

    @precondition(lambda self: any(c.outbox for c in self.fz.conns))
    @rule(data=st.data(), sizes=sizes_st)
    def send_more(self, data, sizes):
        conn = self._pick(data, [c for c in self.fz.conns if c.outbox])
        self._run(self.fz.send, conn, sizes_for(*sizes, len(conn.outbox)))

    @precondition(lambda self: self.fz.conns)
    @rule(data=st.data())
    def read_due(self, data):
        """Read what is due while a split request may still be half-sent."""
        self._run(self.fz.read_due, self._pick(data, self.fz.conns))

    @precondition(lambda self: self.fz.conns)
    @rule(data=st.data())
    def check(self, data):
        self._run(self.fz.check, self._pick(data, self.fz.conns))

    @precondition(lambda self: self.fz.conns)
    @rule(data=st.data())
    def close_connection(self, data):
        self._run(self.fz.close, self._pick(data, self.fz.conns))

    @precondition(lambda self: self.fz.conns)
    @rule(data=st.data())
    def abandon_connection(self, data):
        self._run(self.fz.abandon, self._pick(data, self.fz.conns))

    def teardown(self):
        if self.failed:  # the failure is reported already; checks now would only bury it
            for conn in list(self.fz.conns):
                self.fz.abandon(conn)
            return
        self.fz.close_all()
        self.fz.alive()


def test_fuzz_daemon_stateful(fuzz_target):
    DaemonMachine.target = fuzz_target
    try:
        run_state_machine_as_test(DaemonMachine, settings=settings(
            max_examples=int(os.environ.get("PRNGD_FUZZ_EXAMPLES", "200")),
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ))
    finally:
        DaemonMachine.target = None
    # Unknown commands are logged, yet nothing else: no traceback in the daemon's log.
    assert "Traceback" not in fuzz_target.log(), fuzz_target.log()


# ---------------------------------------------------------------- long mode: a seeded driver loop


def random_request(rng: random.Random):
    kind = rng.randrange(5)
    if kind == 0:
        return level_request()
    if kind == 1:
        return nonblocking_request(rng.randrange(256))
    if kind == 2:
        return blocking_request(rng.randrange(256))
    if kind == 3:
        return write_request(rng.randrange(0x10000), rng.randbytes(rng.randrange(256)))
    return pid_request()


def random_sizes(rng: random.Random, outbox_len: int) -> list[int]:
    kind = rng.choices(("all", "cut", "slow", "chunks"), (5, 2, 1, 3))[0]
    if kind == "all":
        return sizes_for("all", None, outbox_len)
    if kind == "cut":
        return sizes_for("cut", rng.randrange(1, 6) if rng.random() < 0.7 else rng.randrange(6, 261), outbox_len)
    if kind == "slow":
        return sizes_for("slow", rng.randrange(1, 41), outbox_len)
    return sizes_for("chunks", [rng.randrange(1, 301) for _ in range(rng.randrange(1, 7))], outbox_len)


def drive(fz: Fuzzer, rng: random.Random, target_inputs: int, errors: list[str]) -> None:
    """The hypothesis machine's actions, drawn at random until `target_inputs` are sent."""
    step = 0
    while fz.inputs < target_inputs:
        step += 1
        writable = fz.writable()
        action = rng.choices(
            ("open", "send", "unknown", "more", "read", "check", "close", "abandon"),
            (4 if len(fz.conns) < MAX_OPEN else 0, 40 if writable else 0, 3 if writable else 0,
             8, 8, 8, 3, 1) if fz.conns else (1, 0, 0, 0, 0, 0, 0, 0))[0]
        try:
            if action == "open":
                fz.open(unix=rng.random() < 0.7)
            elif action == "send":
                conn = rng.choice(writable)
                fz.queue(conn, [random_request(rng) for _ in range(rng.randrange(1, 25))])
                fz.send(conn, random_sizes(rng, len(conn.outbox)))
            elif action == "unknown":
                conn = rng.choice(writable)
                prefix = [random_request(rng) for _ in range(rng.randrange(7))]
                fz.queue_unknown(conn, prefix, rng.choice(UNKNOWN_COMMANDS), rng.randbytes(rng.randrange(13)))
                fz.send(conn, random_sizes(rng, len(conn.outbox)))
            elif action == "more":
                pending = [c for c in fz.conns if c.outbox]
                if pending:
                    conn = rng.choice(pending)
                    fz.send(conn, random_sizes(rng, len(conn.outbox)))
            elif action == "abandon":
                fz.abandon(rng.choice(fz.conns))
            else:
                conn = rng.choice(fz.conns)
                {"read": fz.read_due, "check": fz.check, "close": fz.close}[action](conn)
            # A split request left half-sent must be finished well within
            # request_timeout, however slowly this loop runs on a loaded machine.
            for conn in list(fz.conns):
                if not conn.outbox:
                    conn.partial_since = None
                elif conn.partial_since is None:
                    conn.partial_since = step
                elif step - conn.partial_since > 50:
                    fz.send_all(conn)
                    conn.partial_since = None
        except FramingError as e:
            errors.append(str(e))  # that connection is closed; the run goes on


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.skipif(not os.environ.get("PRNGD_FUZZ_INPUTS"),
                    reason="long fuzz run: set PRNGD_FUZZ_INPUTS (e.g. 1000000) to run it")
def test_fuzz_daemon_long(fuzz_target, capsys):
    target_inputs = int(os.environ["PRNGD_FUZZ_INPUTS"])
    seed = int(os.environ.get("PRNGD_FUZZ_SEED", "11"))
    fz = Fuzzer(fuzz_target.socket, fuzz_target.tcp_address, fuzz_target.pid)
    fz.alive()  # first allocations (a connection's buffers) before the baseline
    rss_start = vm_rss_kib(fuzz_target.pid)
    errors: list[str] = []
    started = time.monotonic()
    drive(fz, random.Random(seed), target_inputs, errors)
    try:
        fz.close_all()
        fz.alive()
    except FramingError as e:
        errors.append(str(e))
    duration = time.monotonic() - started
    alive = fuzz_target.proc.poll() is None
    rss_end = vm_rss_kib(fuzz_target.pid) if alive else -1
    report = (f"fuzz: seed {seed}, {fz.inputs} inputs over {fz.opened} connections in {duration:.0f} s, "
              f"{len(errors)} framing errors, daemon {'alive' if alive else 'DEAD'}, "
              f"VmRSS {rss_start} kB -> {rss_end} kB ({(rss_end - rss_start) / 1024:+.1f} MB)\n"
              + ", ".join(f"{k} {v}" for k, v in sorted(fz.stats.items())))
    with capsys.disabled():
        print("\n" + report)
    assert not errors, report + "\n" + "\n".join(errors[:20])
    assert alive, report
    assert rss_end - rss_start < 20 * 1024, report
    assert "Traceback" not in fuzz_target.log(), fuzz_target.log()
