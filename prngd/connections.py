"""EGD connections: state machines in one epoll set, driven by one trio task.

A connection is a `Connection`: the sans-IO decoder, the replies queued for it,
its peer (uid, or TCP source address, read once at accept) and its deadline.
Its logic is plain methods (`receive`, `answer`, `take_output`, `queue_rest`,
`resume`, `interest`)
that tests call without sockets.

`Driver.run` is the only task.  It owns a `select.epoll` set holding the
listeners and every connection, each registered once: read interest, write
interest only while replies are queued, and no read interest while requests
wait behind a full queue or for the pool's first seeding, so a client that
does not read blocks only itself.  The task awaits readability of the epoll
descriptor itself, then handles each ready descriptor inline, and under load
polls again before it waits.  Trio pays at most one wait per turn instead of
one per request and connection (an epoll re-registration and a parked task
each: a quarter of the daemon's time with a task per connection).

A turn first reads and answers every ready connection, then sends the
replies back to back, at most SEND_BATCH at a time.  A client's process
asleep in poll or epoll_wait is woken by the first of its replies, and on two
busy cores that wake-up (an interrupt to the other core, costly in a virtual
machine) was a tenth of the daemon's time when every reply went out on its own
between two reads; sent together, most replies find their reader awake.  A
reply waits at most for the 15 before it.

Deadlines sit in a heap; an entry is pushed only when a connection's deadline
moves earlier, and the task sleeps until the nearest.  `request_timeout` runs
from a request's first byte to its last whatever the pace of the bytes;
`idle_timeout` (0: never) from the last request.  Fair share: one uid (TCP:
one source address) holds at most `max_connections_per_uid` connections; root
is exempt, as it could stop the daemon anyway and its clients (sshd) are the
ones that must be served.
"""

from __future__ import annotations

import _socket
import heapq
import logging
import math
import select
import socket
import struct
import time

import trio

from prngd import egd
from prngd.egd import encode_nonblocking

log = logging.getLogger("prngd")

# One read takes at most this much; with the output bound it keeps a
# connection's memory well under 100 KiB whatever the client sends.  recv()
# allocates the whole size before it shrinks the result: at most 448 bytes
# (a bytes object under 512) come from CPython's small-object allocator, not
# malloc, and still hold 224 pipelined two-byte requests.
RECV_SIZE = 448
OUTPUT_LIMIT = 65536
# Accepted per listener per turn: a connect storm must not starve the clients already here.
ACCEPT_BURST = 64
ACCEPT_PAUSE = 0.1  # after accept() fails for want of descriptors or memory
MAX_EVENTS = 1024
YIELD_EVERY = 256  # events handled before the driver lets trio's other tasks run
# Replies of one turn held back at most, to leave back to back (see the docstring).
SEND_BATCH = 16

INF = math.inf
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLHUP_ERR = select.EPOLLHUP | select.EPOLLERR
# Connections' descriptors stay in blocking mode: every recv and send passes
# this flag instead, which spares an ioctl per new connection.
DONTWAIT = socket.MSG_DONTWAIT
# Plain ints: the socket module's enums cost a conversion per new connection.
AF_UNIX, SOCK_STREAM = int(socket.AF_UNIX), int(socket.SOCK_STREAM)
UCRED = struct.Struct("=iii")  # struct ucred: pid, uid, gid (uid read signed, as before)


class Counters:
    __slots__ = ("current", "total", "rejected", "rejected_global_cap", "rejected_per_uid", "bytes_served",
                 "requests", "protocol_errors", "sending")

    def __init__(self) -> None:
        self.current = 0
        self.total = 0
        self.rejected = 0  # the sum of the two below
        self.rejected_global_cap = 0
        self.rejected_per_uid = 0
        self.bytes_served = 0
        self.requests = [0] * 5  # indexed by command byte
        self.protocol_errors = 0
        self.sending = 0  # connections with replies queued (shutdown waits for them)


class RateLimitedLog:
    """At most `burst` lines per `period` seconds; the rest are counted and summarised."""

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 10.0,
                 summary: str = "%d more protocol errors not logged") -> None:
        self.logger, self.burst, self.period, self.summary = logger, burst, period, summary
        self.window_start = -INF
        self.count = 0
        self.suppressed = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.period:
            if self.suppressed:
                self.logger.warning(self.summary, self.suppressed)
            self.window_start, self.count, self.suppressed = now, 0, 0
        if self.count < self.burst:
            self.count += 1
            self.logger.warning(msg, *args)
        else:
            self.suppressed += 1


def peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    except OSError:
        return None
    return UCRED.unpack(creds)[1] if len(creds) == UCRED.size else None


def describe_peer(peer) -> str:
    if peer is None:
        return "a peer of unknown uid"
    return f"uid {peer}" if isinstance(peer, int) else str(peer)


class Connection:
    """One client: what it sent, what it is owed, and when it must be done."""

    __slots__ = ("driver", "sock", "fd", "peer", "is_unix", "decoder", "out", "out_size", "held", "closing",
                 "backlog", "mask", "deadline", "queued_at", "in_request", "closed", "pr")

    def __init__(self, driver: Driver, sock: socket.socket | None, peer, is_unix: bool, pr: bool = False) -> None:
        self.driver = driver
        self.sock = sock
        self.fd = sock.fileno() if sock is not None else -1
        self.peer = peer  # uid (Unix; None if unknown) or source address (TCP)
        self.is_unix = is_unix
        self.decoder = egd.Decoder()
        self.out: list[bytes] = []  # replies not yet sent, in order
        self.out_size = 0
        self.held: egd.ReadBlocking | None = None  # a 02 waiting for the pool's first seeding
        self.closing = False  # a protocol error: close once the replies before it are sent
        self.backlog = False  # requests wait behind a full queue: read no more until they are answered
        self.mask = EPOLLIN  # what the epoll set holds for it
        self.deadline = INF
        self.queued_at = INF  # the time of its entry in the driver's heap
        self.in_request = False  # a request is half-received and its deadline runs
        self.closed = False
        self.pr = pr  # its listener's `,pr`: a reseed from the kernel before every read

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the client: answer what is complete, then set the deadline."""
        decoder = self.decoder
        decoder.feed(data)
        self.answer()
        if self.deadline != INF or decoder.pending or self.driver.idle_timeout:
            self.set_deadline(now)  # otherwise it stays what it is: none

    def answer(self) -> None:
        """Answer decoded requests in order, while the output bound and the pool's seeding allow."""
        driver = self.driver
        pool = driver.pool
        counters = driver.counters
        requests = counters.requests
        out = self.out
        size = self.out_size
        next_request = self.decoder.next_request
        seeded = driver.seeded  # it never goes back to False: ask the pool only until it is True
        if not seeded:
            seeded = driver.seeded = pool.seeded
        req = self.held
        self.held = None
        try:
            while size < OUTPUT_LIMIT:
                if req is None:
                    # next_request() rather than iteration: no StopIteration per read.
                    req = next_request()
                    if req is None:
                        break
                    self.in_request = False  # a request completed: the next one's clock starts afresh
                    cmd = req.command
                    requests[cmd] += 1
                else:
                    cmd = req.command
                if cmd == 2:  # blocking read
                    n = req.n
                    if not n:
                        req = None
                        continue
                    if not seeded:
                        self.held = req  # parked: only this connection waits
                        driver.park(self)
                        break
                    if self.pr:
                        pool.refresh()
                    reply = pool.read(n)
                elif cmd == 1:  # non-blocking read: the full count once seeded
                    if seeded:
                        n = req.n
                        if self.pr:
                            pool.refresh()
                        reply = encode_nonblocking(pool.read(n))
                    else:
                        # Only when even the kernel was not ready at start.
                        reply = b"\x00"
                        n = 0
                elif cmd == 0:
                    reply = egd.encode_entropy_level(pool.entropy_bits)
                    n = 0
                elif cmd == 4:
                    reply = driver.pid_reply
                    n = 0
                else:  # write entropy: mixed always, credited only from trusted peers
                    if req.data:
                        trusted = driver.trusted(self)
                        pool.add("egd-write" if trusted else "egd-write-untrusted", req.data,
                                 min(req.bits, 8 * len(req.data)) if trusted else 0)
                    req = None
                    continue
                req = None
                counters.bytes_served += n
                out.append(reply)
                size += len(reply)
            else:
                self.backlog = True
                self.out_size = size
                return
        except egd.ProtocolError as e:
            # Requests before the bad byte are answered, then the close.
            counters.protocol_errors += 1
            driver.errors.warning("closing connection: %s", e)
            self.closing = True
        self.out_size = size
        self.backlog = False

    def resume(self) -> None:
        """The pool is seeded: answer the parked 02 and whatever followed it."""
        self.answer()

    def set_deadline(self, now: float) -> None:
        if self.held is not None or self.closing or self.backlog:
            self.deadline = INF  # we are the ones not reading: no clock runs against the client
            self.in_request = False
            return
        settings = self.driver.settings
        if self.decoder.pending:
            if not self.in_request:  # the first byte of a request: its whole deadline starts now
                self.in_request = True
                self.deadline = now + settings.request_timeout
        elif settings.idle_timeout > 0:
            self.deadline = now + settings.idle_timeout
        else:
            self.deadline = INF

    # ------------------------------------------------------------ output

    def take_output(self) -> bytes:
        """Everything queued, in one piece, the queue emptied; what does not leave goes back with queue_rest()."""
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_size = 0
        return data

    def queue_rest(self, data: bytes, n: int) -> None:
        """Only `n` bytes of `data` (from take_output(), or a reply never queued) left: queue the rest first."""
        rest = data[n:] if n else data
        self.out.insert(0, rest)
        self.out_size += len(rest)

    def interest(self) -> int:
        """What the epoll set should report for this connection."""
        mask = EPOLLOUT if self.out else 0
        if self.held is None and not self.closing and not self.backlog:
            mask |= EPOLLIN
        return mask

    def expired(self, now: float) -> str | None:
        """Why the deadline closes this connection now, or None if it does not."""
        if self.deadline > now:
            return None
        if self.in_request:
            return f"request incomplete after {self.driver.settings.request_timeout:g}s"
        return "idle"


class Driver:
    """The one task that serves every EGD connection (see the module docstring)."""

    def __init__(self, settings, pool, counters: Counters, pid_reply: bytes) -> None:
        self.pool = pool
        self.seeded = False  # pool.seeded, once it is True
        self.counters = counters
        self.pid_reply = pid_reply
        self.errors = RateLimitedLog(logging.getLogger("prngd.protocol"))
        self.refusals = RateLimitedLog(logging.getLogger("prngd"), burst=3,
                                       summary="%d more connections refused")
        self.configure(settings)
        self.conns: dict[int, Connection] = {}
        self.held_by: dict = {}  # peer -> connections open
        self.listeners: dict[int, object] = {}  # fd -> Listener, while accepting
        self.paused: dict[int, float] = {}  # listener fd -> when to accept again
        self.parked: list[Connection] = []
        self.heap: list[tuple[float, int, Connection]] = []
        self._seq = 0  # heap tie-breaker
        self._ep: select.epoll | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._wake = False
        self._drained: trio.Event | None = None
        self.draining = False

    def configure(self, settings) -> None:
        """Take (re)loaded settings; open connections keep going."""
        self.settings = settings
        self.idle_timeout = settings.idle_timeout
        self.trusted_uids = frozenset([0, *settings.trusted_uids])
        self.share = settings.max_connections_per_uid or max(1, settings.max_connections // 4)

    def trusted(self, conn: Connection) -> bool:
        if not conn.is_unix:
            return self.settings.trust_tcp
        return conn.peer in self.trusted_uids

    # ------------------------------------------------------------ what connections ask of the driver

    def park(self, conn: Connection) -> None:
        self.parked.append(conn)

    def wake(self) -> None:
        """Something outside the driver changed (the pool got seeded): take a turn now."""
        self._wake = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def schedule(self, conn: Connection) -> None:
        if conn.deadline < conn.queued_at:
            conn.queued_at = conn.deadline
            self._seq += 1
            heapq.heappush(self.heap, (conn.deadline, self._seq, conn))
            if len(self.heap) > 2 * len(self.conns) + 64:
                self._compact()

    def _compact(self) -> None:
        # Entries of closed connections stay until their time comes; with an
        # idle_timeout and many short connections they would pile up, so the
        # heap is rebuilt from the live entries whenever they are outnumbered.
        self.heap[:] = [(c.queued_at, i, c) for i, c in enumerate(self.conns.values()) if c.queued_at != INF]
        self._seq = len(self.heap)
        heapq.heapify(self.heap)

    # ------------------------------------------------------------ the loop

    async def run(self, listeners, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; cancellation closes every connection.

        Started (`nursery.start`) once the first turn is over: the requests
        queued in the listeners' backlogs while the daemon started are
        answered before the work that can wait (prngd.tasks) begins.
        """
        ep = self._ep = select.epoll()
        try:
            for lst in listeners:
                self.listeners[lst.sock.fileno()] = lst
                ep.register(lst.sock.fileno(), EPOLLIN)
            conns, listening = self.conns, self.listeners
            poll, wait_readable, current_time = ep.poll, trio.lowlevel.wait_readable, trio.current_time
            epfd = ep.fileno()
            heap = self.heap
            replies: list[tuple[Connection, bytes]] = []
            events = poll(0, MAX_EVENTS) or None  # the first turn takes what queued during the start
            handled = 0  # events handled since the task last let the others run
            while True:
                if events is None:
                    if task_status is not None:
                        task_status.started()
                        task_status = None
                    wake_at = heap[0][0] if heap else INF
                    if self.paused:
                        wake_at = min(wake_at, *self.paused.values())
                    if self._wake:
                        await trio.lowlevel.checkpoint()
                    elif wake_at == INF and not self.parked:
                        await wait_readable(epfd)  # the common case: no cancel scope to build
                    else:
                        with trio.CancelScope(deadline=wake_at) as self._wait_scope:
                            await wait_readable(epfd)
                        self._wait_scope = None
                    self._wake = False
                    handled = 0
                    events = poll(0, MAX_EVENTS)
                now = current_time()
                accepting = None
                for fd, ev in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        # self._event(conn, ev, now), inlined for the common case: a request.
                        if ev & EPOLLIN and conn.mask & EPOLLIN:
                            try:
                                reply = self._readable(conn, now)
                            except Exception:
                                self._bug(conn)
                            else:
                                if reply is not None:
                                    replies.append((conn, reply))
                                    if len(replies) == SEND_BATCH:
                                        self._send_all(replies)
                        else:
                            self._event(conn, ev, now)
                    elif fd in listening:
                        accepting = [fd] if accepting is None else [*accepting, fd]
                if replies:
                    # Before anything else reads a connection (_catch_up while
                    # accepting): a reply held here must leave before the next.
                    self._send_all(replies)
                if accepting is not None:
                    # After the connections' events: slots freed by a close in
                    # this turn are free for the newcomers.
                    for fd in accepting:
                        if fd in listening:
                            try:
                                self._accept(listening[fd], now)
                            except Exception:
                                # A bug must cost the newcomer, never the daemon.
                                log.exception("unexpected error accepting a connection")
                if self.parked and self.pool.seeded:
                    self._resume_parked(now)
                if heap and heap[0][0] <= now:
                    self._expire(now)
                if self.paused:
                    self._unpause(now)
                # Under load the next requests have come in while we worked:
                # take them without a round trip through trio's scheduler, as
                # long as the other tasks still get their turn soon.
                handled += len(events)
                events = (poll(0, MAX_EVENTS) or None) if handled < YIELD_EVERY else None
        finally:
            for conn in list(self.conns.values()):
                self.close(conn)
            ep.close()
            self._ep = None

    def _send_all(self, replies: list[tuple[Connection, bytes]]) -> None:
        """Send a turn's replies back to back (see the module docstring), and forget them."""
        send = self._send
        for conn, reply in replies:
            if not conn.closed:
                try:
                    send(conn, reply)
                except Exception:
                    self._bug(conn)
        replies.clear()

    def _event(self, conn: Connection, ev: int, now: float) -> None:
        try:
            if ev & EPOLLIN and conn.mask & EPOLLIN:
                reply = self._readable(conn, now)
                if reply is not None:
                    self._send(conn, reply)
            elif ev & EPOLLOUT and conn.out:
                self._flush(conn, now)
            elif ev & EPOLLHUP_ERR:
                self.close(conn)  # gone while we were not reading it (parked or blocked)
        except Exception:
            self._bug(conn)

    def _bug(self, conn: Connection) -> None:
        # A bug must cost one connection, never the daemon.
        log.exception("unexpected error on a connection")
        self.close(conn)

    def _readable(self, conn: Connection, now: float) -> bytes | None:
        """Read what the client sent and answer it.  Returns the replies to send
        now, in one piece, and leaves the sending to the caller (see `run`)."""
        try:
            data = conn.sock.recv(RECV_SIZE, DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            self._lost(conn, e)
            return None
        if not data:
            self.close(conn)
            return None
        out = conn.out
        cmd = data[0]
        if len(data) == 2 and (cmd == 2 or cmd == 1) and data[1] and self.seeded and not out \
                and not conn.decoder.pending:
            # A lone read between requests, nothing queued: nearly every
            # request there is.  Answered here, as Connection.answer would,
            # without the decoder's round trip (about 15% of the CPU per reply).
            n = data[1]
            counters = self.counters
            counters.requests[cmd] += 1
            counters.bytes_served += n
            if conn.deadline != INF or self.idle_timeout:
                conn.set_deadline(now)
                if conn.deadline < conn.queued_at:
                    self.schedule(conn)
            if conn.pr:
                self.pool.refresh()
            return self.pool.read(n) if cmd == 2 else encode_nonblocking(self.pool.read(n))
        conn.receive(data, now)
        if conn.backlog:
            self._flush(conn, now)  # more requests wait behind a full queue
            return None
        if out:
            reply = conn.take_output()  # one read's replies in one send
        elif conn.closing:
            self.close(conn)
            return None
        else:
            reply = None
        if conn.deadline < conn.queued_at:
            self.schedule(conn)
        if conn.mask != EPOLLIN or conn.held is not None:
            self._update(conn)
        return reply

    def _send(self, conn: Connection, reply: bytes) -> None:
        """What _readable returned: send it, and queue what does not leave at once."""
        try:
            sent = conn.sock.send(reply, DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._lost(conn, e)
            return
        if sent < len(reply):
            conn.queue_rest(reply, sent)
            self._update(conn)
        elif conn.closing:
            self.close(conn)

    def _flush(self, conn: Connection, now: float) -> None:
        """Send what is queued; as the queue drains, answer the requests that waited behind it."""
        while True:
            if conn.out:
                self._send(conn, conn.take_output())
                if conn.closed:
                    return
                if conn.out:
                    break  # blocked: the client is not reading; wait for EPOLLOUT
            if conn.closing:
                self.close(conn)  # all its replies have left
                return
            if not conn.backlog or self.draining:
                break
            conn.answer()
            if not conn.out:
                break
        conn.set_deadline(now)
        self.schedule(conn)
        self._update(conn)

    def _update(self, conn: Connection) -> None:
        mask = conn.interest()
        if self.draining:
            mask &= EPOLLOUT  # shutting down: no new requests, only the replies queued
        if mask != conn.mask:
            sending = bool(conn.mask & EPOLLOUT)
            if sending != bool(mask & EPOLLOUT):
                self._sending_changed(1 if mask & EPOLLOUT else -1)
            conn.mask = mask
            self._ep.modify(conn.fd, mask)

    def _sending_changed(self, delta: int) -> None:
        counters = self.counters
        counters.sending += delta
        if not counters.sending and self._drained is not None:
            self._drained.set()

    def _resume_parked(self, now: float) -> None:
        parked, self.parked = self.parked, []
        for conn in parked:
            if conn.closed:
                continue
            try:
                conn.resume()
                if conn.out:
                    self._flush(conn, now)
                else:
                    conn.set_deadline(now)
                    self.schedule(conn)
                    self._update(conn)
            except Exception:
                log.exception("unexpected error on a connection")
                self.close(conn)

    def _expire(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, _, conn = heapq.heappop(heap)
            if conn.closed or at != conn.queued_at:
                continue  # superseded by an earlier entry, or already closed
            conn.queued_at = INF
            why = conn.expired(now)
            if why is None:
                self.schedule(conn)  # the deadline moved later since this entry
            else:
                if why != "idle":
                    self.errors.warning("closing connection: %s", why)
                self.close(conn)

    def _lost(self, conn: Connection, e: OSError) -> None:
        if not isinstance(e, (BrokenPipeError, ConnectionResetError)):
            self.errors.warning("closing connection: %s", e)
        self.close(conn)  # the client left mid-reply: its loss only

    def close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.mask & EPOLLOUT:
            self._sending_changed(-1)
        del self.conns[conn.fd]
        left = self.held_by[conn.peer] - 1
        if left:
            self.held_by[conn.peer] = left
        else:
            del self.held_by[conn.peer]
        self.counters.current -= 1
        conn.sock.close()  # also removes it from the epoll set

    # ------------------------------------------------------------ accepting

    def _accept(self, lst, now: float) -> None:
        sock = lst.sock
        # socket.accept() wraps each new descriptor in a socket.socket, whose
        # enum conversions cost a tenth of a new-connection client's time;
        # the C-level socket it is built on serves us as well.
        accept = sock._accept
        family = AF_UNIX if lst.is_unix else int(sock.family)
        for _ in range(ACCEPT_BURST):
            try:
                fd, addr = accept()
                csock = _socket.socket(family, SOCK_STREAM, 0, fd)
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as e:
                # Out of descriptors or memory: say so, pause, let clients retry.
                log.error("accept on %s failed: %s", lst.spec, e.strerror)
                self._ep.unregister(sock.fileno())
                self.paused[sock.fileno()] = now + ACCEPT_PAUSE
                return
            if not self._admit(csock, addr, lst.is_unix, now, lst.pr):
                # A refusal ends the burst: the closes that may free a slot
                # (already in the epoll set) are handled before the next accept.
                return

    def _admit(self, csock: socket.socket, addr, is_unix: bool, now: float, pr: bool = False) -> bool:
        """Serve a new connection, or refuse it (False) when it is over a limit."""
        counters = self.counters
        # A vsock peer is its context id, kept apart from uids (fair share, root's exemption).
        peer = peer_uid(csock) if is_unix else addr[0] if isinstance(addr[0], str) else f"vsock cid {addr[0]}"
        held = self.held_by.get(peer, 0)
        if counters.current >= self.settings.max_connections or (held >= self.share and peer != 0):
            # Before refusing, take the closes that came in since this turn's
            # poll: a client that closes and reconnects at once gets its slot.
            self._catch_up(now)
            held = self.held_by.get(peer, 0)
        if counters.current >= self.settings.max_connections:
            csock.close()
            counters.rejected += 1
            counters.rejected_global_cap += 1
            self.refusals.warning("refusing connection from %s: all %d connections in use (max_connections)",
                                  describe_peer(peer), self.settings.max_connections)
            return False
        if held >= self.share and peer != 0:
            csock.close()
            counters.rejected += 1
            counters.rejected_per_uid += 1
            self.refusals.warning("refusing connection from %s: it holds %d of its %d (max_connections_per_uid)",
                                  describe_peer(peer), held, self.share)
            return False
        conn = Connection(self, csock, peer, is_unix, pr)
        self.held_by[peer] = held + 1
        counters.current += 1
        counters.total += 1
        self.conns[conn.fd] = conn
        self._ep.register(conn.fd, EPOLLIN)
        # A connection-per-request client (OpenSSL, OpenSSH) has usually sent
        # its request already: answer it now rather than after a turn.
        try:
            reply = self._readable(conn, now)
            if reply is not None:
                self._send(conn, reply)
        except Exception:
            self._bug(conn)
        return True

    def _catch_up(self, now: float) -> None:
        conns = self.conns
        for fd, ev in self._ep.poll(0, MAX_EVENTS):
            conn = conns.get(fd)
            if conn is not None:
                self._event(conn, ev, now)

    def _unpause(self, now: float) -> None:
        for fd, at in list(self.paused.items()):
            if at <= now:
                del self.paused[fd]
                if fd in self.listeners:
                    self._ep.register(fd, EPOLLIN)

    # ------------------------------------------------------------ shutdown

    def stop_accepting(self) -> None:
        for fd in self.listeners:
            if self._ep is not None and fd not in self.paused:
                self._ep.unregister(fd)
        self.listeners.clear()
        self.paused.clear()

    async def drain(self, grace: float) -> None:
        """Read no more requests; give the replies queued up to `grace` seconds to leave."""
        self.draining = True
        for conn in list(self.conns.values()):
            self._update(conn)
        if self.counters.sending:
            self._drained = trio.Event()
            with trio.move_on_after(grace):
                await self._drained.wait()
