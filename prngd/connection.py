"""One EGD connection as pure state: bytes in, replies and explicit state out (no sockets, no clock).

A `Connection` holds the sans-IO decoder, the replies queued for its client,
its peer (a uid, an address, or None: read once at accept) and its clocks.
What answering draws on (the pool, the counters, the pid reply, the
admission policy) comes in a `Service` passed to each call; nothing here
refers back to whoever moves the bytes.  That caller reads the state after
each call:

- `out`: replies to send, in order (`take_output()` / `queue_rest()`);
- `held`: a 0x02 waits for the pool's first seeding (park it; `answer()` again later);
- `backlog`: requests wait behind a full output queue (send, then `answer()` again);
- `closing` / `error`: a protocol error; close once the replies before it have left;
- `deadline`: when the connection must be closed (`expired()` says why), from
  the policy's clocks: the request clock from a request's first byte, the
  write clock from the last progress of queued replies, the idle clock.
"""

from __future__ import annotations

import math
from select import EPOLLIN, EPOLLOUT

from prngd import egd
from prngd.egd import encode_nonblocking

# With RECV_SIZE (the driver's) this bound keeps a connection's memory well
# under 100 KiB whatever the client sends.
OUTPUT_LIMIT = 65536
INF = math.inf


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


class Service:
    """What answering needs, handed to each Connection call: the pool, the counters, the pid reply, the policy."""

    __slots__ = ("pool", "counters", "pid_reply", "policy", "seeded")

    def __init__(self, pool, counters: Counters, pid_reply: bytes, policy) -> None:
        self.pool = pool
        self.counters = counters
        self.pid_reply = pid_reply
        self.policy = policy  # admission.Admission: who is trusted, the deadlines
        self.seeded = False  # pool.seeded, once it is True (it never goes back)

    def is_seeded(self) -> bool:
        if not self.seeded:
            self.seeded = self.pool.seeded
        return self.seeded


def read_reply(svc: Service, cmd: int, n: int, pr: bool) -> bytes:
    """The reply to a 0x01 or 0x02 for n > 0 bytes from a seeded pool: the one place reads are answered.
    `pr`: the connection's listener is a `,pr` socket, so the read comes after a reseed from the kernel."""
    counters = svc.counters
    counters.requests[cmd] += 1
    counters.bytes_served += n
    if pr:
        svc.pool.refresh()
    data = svc.pool.read(n)
    return data if cmd == 2 else encode_nonblocking(data)


class Connection:
    """One client: what it sent, what it is owed, and when it must be done."""

    __slots__ = ("sock", "fd", "peer", "decoder", "out", "out_size", "held", "closing", "error", "backlog",
                 "mask", "deadline", "queued_at", "request_since", "write_since", "closed", "pr")

    def __init__(self, sock, peer, pr: bool = False) -> None:
        self.sock = sock  # carried for the driver, never used here
        self.fd = sock.fileno() if sock is not None else -1
        self.peer = peer  # uid (int), address (str), or None: a uid that could not be read
        self.decoder = egd.Decoder()
        self.out: list[bytes] = []  # replies not yet sent, in order
        self.out_size = 0
        self.held: egd.ReadBlocking | None = None  # a 02 waiting for the pool's first seeding
        self.closing = False  # a protocol error: close once the replies before it are sent
        self.error: str | None = None  # what it was, until the caller has reported it
        self.backlog = False  # requests wait behind a full queue: read no more until they are answered
        self.mask = EPOLLIN  # the driver's: what its epoll set holds for it
        self.deadline = INF
        self.queued_at = INF  # the driver's: the time of its entry in the deadline heap
        self.request_since = INF  # first byte of the request being received, while we read
        self.write_since = INF  # last progress of the replies queued, while there are some
        self.closed = False
        self.pr = pr  # its listener's `,pr`: a reseed from the kernel before every read

    # ------------------------------------------------------------ input

    def receive(self, data: bytes, now: float, svc: Service) -> bytes | None:
        """Bytes from the client.  A lone read between requests (nearly every
        request there is) is answered at once and its reply returned, without
        the decoder's round trip; otherwise requests are answered into `out`
        (None is returned) and the caller reads the state."""
        if len(data) == 2 and not self.out and not self.decoder.pending and svc.seeded:
            cmd = data[0]
            if (cmd == 2 or cmd == 1) and data[1]:
                reply = read_reply(svc, cmd, data[1], self.pr)
                if self.deadline != INF or svc.policy.idle_timeout:
                    self.set_deadline(now, svc.policy)
                return reply
        self.decoder.feed(data)
        self.answer(svc)
        if self.deadline != INF or self.decoder.pending or svc.policy.idle_timeout:
            self.set_deadline(now, svc.policy)  # otherwise it stays what it is: none
        return None

    def answer(self, svc: Service) -> None:
        """Answer decoded requests in order, while the output bound and the pool's seeding allow."""
        counters = svc.counters
        requests = counters.requests
        out = self.out
        size = self.out_size
        next_request = self.decoder.next_request
        seeded = svc.is_seeded()
        req = self.held
        self.held = None
        try:
            while size < OUTPUT_LIMIT:
                if req is None:
                    # next_request() rather than iteration: no StopIteration per read.
                    req = next_request()
                    if req is None:
                        break
                    self.request_since = INF  # a request completed: the next one's clock starts afresh
                cmd = req.command
                if cmd == 2 or cmd == 1:
                    n = req.n
                    if n and seeded:
                        reply = read_reply(svc, cmd, n, self.pr)
                    elif cmd == 1:  # 01 00, or unseeded (only when even the kernel was not ready at start)
                        requests[1] += 1
                        reply = b"\x00"
                    elif n:  # unseeded: parked, only this connection waits
                        self.held = req
                        break
                    else:  # 02 00: nothing at all
                        requests[2] += 1
                        req = None
                        continue
                elif cmd == 0:
                    requests[0] += 1
                    reply = egd.encode_entropy_level(svc.pool.entropy_bits)
                elif cmd == 4:
                    requests[4] += 1
                    reply = svc.pid_reply
                else:  # write entropy: mixed always, credited only from trusted peers
                    requests[3] += 1
                    if req.data:
                        trusted = svc.policy.trusted(self.peer)
                        svc.pool.add("egd-write" if trusted else "egd-write-untrusted", req.data,
                                     min(req.bits, 8 * len(req.data)) if trusted else 0)
                    req = None
                    continue
                req = None
                out.append(reply)
                size += len(reply)
            else:
                self.backlog = True
                self.out_size = size
                return
        except egd.ProtocolError as e:
            # Requests before the bad byte are answered, then the close.
            counters.protocol_errors += 1
            self.error = str(e)
            self.closing = True
        self.out_size = size
        self.backlog = False

    # ------------------------------------------------------------ clocks

    def reading(self) -> bool:
        """Whether we take more requests from it (else no clock runs against its sending)."""
        return self.held is None and not self.closing and not self.backlog

    def set_deadline(self, now: float, policy) -> None:
        if self.decoder.pending and self.reading():
            if self.request_since == INF:  # the first byte of a request: its whole deadline starts now
                self.request_since = now
        else:
            self.request_since = INF
        if not self.out:
            self.write_since = INF
        self.deadline = policy.deadline(self.request_since, self.write_since, now, self.held is None)

    def expired(self, now: float, policy) -> str | None:
        """Why the deadline closes this connection now ("idle" for a silent close), or None if it does not."""
        if self.deadline > now:
            return None
        return policy.expiry(self.request_since, self.write_since)

    # ------------------------------------------------------------ output

    def take_output(self) -> bytes:
        """Everything queued, in one piece, the queue emptied; what does not leave goes back with queue_rest()."""
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_size = 0
        return data

    def queue_rest(self, data: bytes, n: int, now: float) -> None:
        """Only `n` bytes of `data` (from take_output(), or a reply never queued) left: queue the rest
        first.  Any progress, or the first bytes to wait, restarts the write clock."""
        rest = data[n:] if n else data
        self.out.insert(0, rest)
        self.out_size += len(rest)
        if n or self.write_since == INF:
            self.write_since = now

    def interest(self) -> int:
        """What the epoll set should report for this connection."""
        mask = EPOLLOUT if self.out else 0
        if self.held is None and not self.closing and not self.backlog:
            mask |= EPOLLIN
        return mask
