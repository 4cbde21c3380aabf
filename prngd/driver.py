"""EGD connections driven by one trio task over one epoll set: the I/O, and nothing else.

The rules live elsewhere: `connection.Connection` turns a client's bytes into
replies and state, `admission.Admission` decides who may connect and for how
long.  `Driver.run` is the only task.  It owns a `select.epoll` set holding the
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

With one client (one persistent connection: Postfix's tlsmgr, libgcrypt),
nothing is ready when a turn ends, and each request would pay trio's wait and
scheduler round trip.  When trio has no other runnable task and no timer due,
the driver waits for that client's next request in its own epoll set instead,
for at most SPIN_WINDOW or the rest of YIELD_EVERY (`_serve_one`).  It first
polls without sleeping for `busy_poll` microseconds: a client that asks again
at once (a loop of reads) asks within tens of them, and a daemon that never
went to sleep answers it without the wake-up of an idle core, the larger part
of a round trip (in a virtual machine, an exit to the hypervisor each way).
On one 255-byte read at a time that doubled the rate; a lone request costs
at most busy_poll of CPU more.  It is for one connected client only.  With
more, sleeping lets their requests gather into one turn, which is what makes
many connections cheap; a spin answering them one at a time cost 10-20% of
the 50-connection rate.  A client connecting anew for each read (OpenSSL,
OpenSSH) gained nothing measurable from a spin after each turn, and over TCP
it cost CPU, so there is none.  Nor with one usable CPU or a CPU quota under
two (prngd.cpus): the spin would only keep the client from running, or spend
the quota.

Deadlines sit in a heap; an entry is pushed only when a connection's deadline
moves earlier, and the task sleeps until the nearest.

A peer is identified once, at accept: a Unix peer by its uid (SO_PEERCRED), a
loopback TCP peer by the uid owning its socket (sock_diag, one netlink socket
kept open), any other TCP peer by its address.
"""

from __future__ import annotations

import _socket
import heapq
import logging
import select
import socket
import time
from time import perf_counter

import trio

from prngd import sockdiag
from prngd.cpus import usable_cpus
from prngd.admission import GLOBAL_CAP, INF, Admission, describe_peer
from prngd.connection import Connection, Counters, Service
from prngd.peercred import peer_uid

__all__ = ["Counters", "Driver", "RateLimitedLog"]

log = logging.getLogger("prngd")

# One read takes at most this much (with connection.OUTPUT_LIMIT it bounds a
# connection's memory).  recv() allocates the whole size before it shrinks the
# result: at most 448 bytes (a bytes object under 512) come from CPython's
# small-object allocator, not malloc, and still hold 224 pipelined two-byte requests.
RECV_SIZE = 448
# Accepted per listener per turn: a connect storm must not starve the clients already here.
ACCEPT_BURST = 64
ACCEPT_PAUSE = 0.1  # after accept() fails for want of descriptors or memory
MAX_EVENTS = 1024
YIELD_EVERY = 256  # events handled before the driver lets trio's other tasks run
# How long the driver may wait for one client's next request in epoll itself,
# rather than in trio, once it has seen that no other task is runnable and no
# timer is due (see `_spin_until`).  epoll's timeout is in milliseconds.
SPIN_WINDOW = 0.001
SPIN_EVENTS = 8  # a busy poll's buffer: more ready at once ends the spin anyway
# Replies of one turn held back at most, to leave back to back (see the docstring).
SEND_BATCH = 16

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLHUP_ERR = select.EPOLLHUP | select.EPOLLERR
# Connections' descriptors stay in blocking mode: every recv and send passes
# this flag instead, which spares an ioctl per new connection.
DONTWAIT = socket.MSG_DONTWAIT
# Plain ints: the socket module's enums cost a conversion per new connection.
AF_UNIX, SOCK_STREAM = int(socket.AF_UNIX), int(socket.SOCK_STREAM)
AF_VSOCK = int(getattr(socket, "AF_VSOCK", -1))
_UNTRIED = object()  # sock_diag before the first loopback TCP peer


def busy_window(settings) -> float:
    """Seconds the driver polls without sleeping: settings.busy_poll, but none unless two CPUs can
    be kept busy at once (by affinity and CPU quota: prngd.cpus), one of them for the client."""
    if settings.busy_poll <= 0 or usable_cpus() < 2:
        return 0.0
    return settings.busy_poll / 1e6


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


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


class Driver:
    """The one task that serves every EGD connection (see the module docstring)."""

    def __init__(self, settings, pool, counters: Counters, pid_reply: bytes) -> None:
        self.pool = pool
        self.counters = counters
        self.policy = Admission(settings)
        self.svc = Service(pool, counters, pid_reply, self.policy)
        self.errors = RateLimitedLog(logging.getLogger("prngd.protocol"))
        self.refusals = RateLimitedLog(logging.getLogger("prngd"), burst=3,
                                       summary="%d more connections refused")
        self.settings = settings
        self.busy = busy_window(settings)
        self.conns: dict[int, Connection] = {}
        self.listeners: dict[int, object] = {}  # fd -> Listener, while accepting
        self.local: dict[int, tuple | None] = {}  # TCP listener fd -> its address (None: a wildcard)
        self.paused: dict[int, float] = {}  # listener fd -> when to accept again
        self.parked: set[Connection] = set()
        self.heap: list[tuple[float, int, Connection]] = []
        self._seq = 0  # heap tie-breaker
        self._ep: select.epoll | None = None
        self._diag = _UNTRIED
        self._wait_scope: trio.CancelScope | None = None
        self._wake = False
        self._drained: trio.Event | None = None
        self.accepting = True  # until stop_accepting(), whenever that comes
        self.draining = False

    def configure(self, settings) -> None:
        """Take (re)loaded settings; open connections keep going."""
        self.settings = settings
        self.busy = busy_window(settings)
        self.policy.configure(settings)

    @property
    def share(self) -> int:
        return self.policy.share

    # ------------------------------------------------------------ the heap of deadlines

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
            if self.accepting:  # shutdown may have come before this task first ran
                for lst in listeners:
                    self._listen(lst)
            conns, listening = self.conns, self.listeners
            poll, wait_readable, current_time = ep.poll, trio.lowlevel.wait_readable, trio.current_time
            epfd = ep.fileno()
            heap = self.heap
            replies: list[tuple[Connection, bytes]] = []
            events = poll(0, MAX_EVENTS) or None  # the first turn takes what queued during the start
            handled = 0  # events handled since the task last let the others run
            spin_until = None  # until when this trip may wait in epoll itself (None: not asked yet)
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
                    spin_until = None
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
                                        self._send_all(replies, now)
                        else:
                            self._event(conn, ev, now)
                    elif fd in listening:
                        accepting = [fd] if accepting is None else [*accepting, fd]
                if replies:
                    # Before anything else reads a connection (_catch_up while
                    # accepting): a reply held here must leave before the next.
                    self._send_all(replies, now)
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
                if handled >= YIELD_EVERY:
                    events = None
                elif len(events) == 1 and not self._wake:
                    # One client (Postfix's tlsmgr, libgcrypt): its next request
                    # comes within tens of microseconds.  Wait for it in epoll
                    # itself, briefly and only while nothing else is due, rather
                    # than pay trio's wait and scheduler round trip per request.
                    conn = conns.get(events[0][0])
                    events = poll(0, MAX_EVENTS) or None
                    if events is None and conn is not None and conn.mask == EPOLLIN and not conn.closed:
                        if spin_until is None:
                            spin_until = self._spin_until(now)
                        events, served = self._serve_one(conn, spin_until, YIELD_EVERY - handled)
                        handled += served
                else:
                    events = poll(0, MAX_EVENTS) or None
        finally:
            for conn in list(self.conns.values()):
                self.close(conn)
            ep.close()
            self._ep = None
            if self._diag is not _UNTRIED and self._diag is not None:
                self._diag.close()
                self._diag = _UNTRIED

    def _spin_until(self, now: float) -> float:
        """Until when the driver may wait in its own epoll set: SPIN_WINDOW, if no other trio task is
        runnable and neither trio's timers nor the driver's deadlines fall due sooner; else now."""
        stats = trio.lowlevel.current_statistics()
        if stats.tasks_runnable or stats.run_sync_soon_queue_size:
            return now
        until = now + min(SPIN_WINDOW, stats.seconds_to_next_deadline)
        if self.heap:
            until = min(until, self.heap[0][0])
        if self.paused:
            until = min(until, *self.paused.values())
        return until

    def _serve_one(self, conn: Connection, until: float, budget: int) -> tuple[list | None, int]:
        """Answer one client's requests as they come, waiting in epoll until `until`, at most `budget`
        of them.  Returns the events of any other descriptor (or of this one wanting more than a
        read), for the turn to handle, and how many requests were served."""
        poll, current_time = self._ep.poll, trio.current_time
        wanted = (conn.fd, EPOLLIN)
        served = 0
        busy = self.busy if len(self.conns) == 1 else 0.0
        while served < budget:
            left = until - current_time()
            if left <= 0:
                break
            events = self._busy_poll(until) if busy else None
            if not events:
                if busy:  # the spin took some of the window
                    left = until - current_time()
                    if left <= 0:
                        break
                events = poll(left, MAX_EVENTS)
                if not events:
                    break
            if len(events) != 1 or events[0] != wanted:
                return events, served
            served += 1
            self._serve(conn, current_time())
            if conn.closed or conn.mask != EPOLLIN:
                break
        return None, served

    def _busy_poll(self, until: float) -> list | None:
        """Poll without sleeping for `busy` seconds, or until `until`: the first events, or None."""
        poll = self._ep.poll
        end = perf_counter() + min(self.busy, until - trio.current_time())
        while perf_counter() < end:
            events = poll(0, SPIN_EVENTS)
            if events:
                return events
        return None

    def _send_all(self, replies: list[tuple[Connection, bytes]], now: float) -> None:
        """Send a turn's replies back to back (see the module docstring), and forget them."""
        send = self._send
        for conn, reply in replies:
            if not conn.closed:
                try:
                    send(conn, reply, now)
                except Exception:
                    self._bug(conn)
        replies.clear()

    def _serve(self, conn: Connection, now: float) -> None:
        """Read what the client sent and send the replies at once."""
        try:
            reply = self._readable(conn, now)
            if reply is not None:
                self._send(conn, reply, now)
        except Exception:
            self._bug(conn)

    def _event(self, conn: Connection, ev: int, now: float) -> None:
        if ev & EPOLLIN and conn.mask & EPOLLIN:
            self._serve(conn, now)
            return
        try:
            if ev & EPOLLOUT and conn.out:
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
        reply = conn.receive(data, now, self.svc)
        if reply is None:
            return self._settle(conn, now)
        if conn.deadline < conn.queued_at:
            self.schedule(conn)
        return reply

    def _settle(self, conn: Connection, now: float) -> bytes | None:
        """After requests went through the decoder: act on what the connection's state now says."""
        if conn.error is not None:
            self.errors.warning("closing connection: %s", conn.error)
            conn.error = None
        if conn.held is not None:
            self.parked.add(conn)
        if conn.backlog:
            self._flush(conn, now)  # more requests wait behind a full queue
            return None
        if conn.out:
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

    def _send(self, conn: Connection, reply: bytes, now: float) -> None:
        """What _readable returned: send it, and queue what does not leave at once."""
        try:
            sent = conn.sock.send(reply, DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._lost(conn, e)
            return
        if sent < len(reply):
            conn.queue_rest(reply, sent, now)
            self._clock(conn, now)
            self._update(conn)
        elif conn.closing:
            self.close(conn)
        elif conn.write_since != INF and not conn.out:
            self._clock(conn, now)  # the unread replies have left: their clock stops

    def _clock(self, conn: Connection, now: float) -> None:
        conn.set_deadline(now, self.policy)
        self.schedule(conn)

    def _flush(self, conn: Connection, now: float) -> None:
        """Send what is queued; as the queue drains, answer the requests that waited behind it."""
        while True:
            if conn.out:
                self._send(conn, conn.take_output(), now)
                if conn.closed:
                    return
                if conn.out:
                    break  # blocked: the client is not reading; wait for EPOLLOUT
            if conn.closing:
                self.close(conn)  # all its replies have left
                return
            if not conn.backlog or self.draining:
                break
            conn.answer(self.svc)
            if conn.held is not None:
                self.parked.add(conn)
            if not conn.out:
                break
        self._clock(conn, now)
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
            if self._ep is not None:
                self._ep.modify(conn.fd, mask)

    def _sending_changed(self, delta: int) -> None:
        counters = self.counters
        counters.sending += delta
        if not counters.sending and self._drained is not None:
            self._drained.set()

    def _resume_parked(self, now: float) -> None:
        parked, self.parked = self.parked, set()
        for conn in parked:
            if conn.closed:
                continue
            try:
                conn.answer(self.svc)
                if conn.out:
                    self._flush(conn, now)
                else:
                    self._clock(conn, now)
                    self._update(conn)
            except Exception:
                self._bug(conn)

    def _expire(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, _, conn = heapq.heappop(heap)
            if conn.closed or at != conn.queued_at:
                continue  # superseded by an earlier entry, or already closed
            conn.queued_at = INF
            why = conn.expired(now, self.policy)
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
        self.policy.release(conn.peer)
        self.counters.current -= 1
        conn.sock.close()  # also removes it from the epoll set

    # ------------------------------------------------------------ accepting

    def _listen(self, lst) -> None:
        fd = lst.sock.fileno()
        if fd < 0:
            return  # closed already: shutdown came first
        self.listeners[fd] = lst
        if not lst.is_unix:
            name = lst.sock.getsockname()
            self.local[fd] = None if name[0] in ("0.0.0.0", "::") else name
        self._ep.register(fd, EPOLLIN)

    def _accept(self, lst, now: float) -> None:
        sock = lst.sock
        # socket.accept() wraps each new descriptor in a socket.socket, whose
        # enum conversions cost a tenth of a new-connection client's time;
        # the C-level socket it is built on serves us as well.
        accept = sock._accept
        family = AF_UNIX if lst.is_unix else int(sock.family)
        local = self.local.get(sock.fileno())
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
            if family == AF_UNIX:
                peer = peer_uid(csock)
            elif family == AF_VSOCK:
                # A VM guest is its context id, kept apart from uids (the share, root's exemption).
                peer = f"vsock cid {addr[0]}"
            else:
                peer = self._tcp_peer(csock, family, addr, local)
            if not self._admit(csock, peer, now, lst.pr):
                # A refusal ends the burst: the closes that may free a slot
                # (already in the epoll set) are handled before the next accept.
                return

    def _tcp_peer(self, csock, family: int, addr: tuple, local: tuple | None):
        """A loopback peer's uid, looked up once; a remote peer's address (or a loopback one's, failing that)."""
        host = addr[0]
        if not is_loopback(host):
            return host
        diag = self._diag
        if diag is _UNTRIED:
            diag = self._open_diag()
        if diag is None:
            return host
        try:
            uid = diag.peer_uid(family, local or csock.getsockname(), addr)
        except sockdiag.Unavailable as e:
            self._diag_unavailable(e)
            return host
        return host if uid is None else uid  # None: its socket is gone already

    def _open_diag(self):
        try:
            self._diag = sockdiag.SockDiag()
        except sockdiag.Unavailable as e:
            self._diag_unavailable(e)
        return self._diag

    def _diag_unavailable(self, e: OSError) -> None:
        log.warning("sock_diag unavailable (%s): loopback TCP peers are told apart by source address, "
                    "not by uid", e.strerror or e)
        if self._diag is not _UNTRIED and self._diag is not None:
            self._diag.close()
        self._diag = None

    def _admit(self, csock: socket.socket, peer, now: float, pr: bool = False) -> bool:
        """Serve a new connection, or refuse it (False) when it is over a limit."""
        counters = self.counters
        policy = self.policy
        if policy.refusal(peer) is not None:
            # Before refusing, take the closes that came in since this turn's
            # poll: a client that closes and reconnects at once gets its slot.
            self._catch_up(now)
            refusal = policy.refusal(peer)
            if refusal is not None:
                csock.close()
                counters.rejected += 1
                if refusal == GLOBAL_CAP:
                    counters.rejected_global_cap += 1
                    self.refusals.warning("refusing connection from %s: all %d connections in use "
                                          "(max_connections)", describe_peer(peer), policy.max_connections)
                else:
                    counters.rejected_per_uid += 1
                    self.refusals.warning("refusing connection from %s: it holds %d of its %d "
                                          "(max_connections_per_uid)", describe_peer(peer), policy.held(peer),
                                          policy.share)
                return False
        conn = Connection(csock, peer, pr)
        policy.admit(peer)
        counters.current += 1
        counters.total += 1
        self.conns[conn.fd] = conn
        self._ep.register(conn.fd, EPOLLIN)
        if policy.idle_timeout:
            self._clock(conn, now)  # a connection that never speaks is idle from now
        # A connection-per-request client (OpenSSL, OpenSSH) has usually sent
        # its request already: answer it now rather than after a turn.
        self._serve(conn, now)
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
        """Accept no more connections; safe at any moment, before run() or after it."""
        self.accepting = False
        ep = self._ep
        for fd in self.listeners:
            if ep is not None and not ep.closed and fd not in self.paused:
                ep.unregister(fd)
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
