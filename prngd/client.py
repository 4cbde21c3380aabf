"""EGD client: blocking (`EGDClient`) and trio (`AsyncEGDClient`).

Each command is written once, as a small generator that yields batches of
`prngd.egd` requests and receives their replies (the sans-IO way); the two
clients differ only in how they move the bytes.  Requests are encoded and
replies measured by `prngd.egd`, so no protocol knowledge lives here.

    with EGDClient("/var/run/egd-pool") as egd:
        key = egd.read(32)

    async with await AsyncEGDClient.connect("127.0.0.1:708") as egd:
        bits = await egd.entropy_level()

Errors are `EGDError`s: `NoSocket` (the path does not exist), `Refused`
(nobody listens), `ShortReply` (the server closed before the reply was
complete), `Timeout`, `NotEGD` (the reply cannot be an EGD reply: a count
byte above the request, bytes nobody asked for, an HTTP status line);
anything else that goes wrong with the socket is an `EGDError` carrying the
OS message.  A reply that fails these checks is never returned as randomness.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import TYPE_CHECKING, Generator, Iterable, Iterator

from prngd import egd
from prngd.peercred import peer_uid

if TYPE_CHECKING:
    import trio  # imported where used: the blocking tools start faster without it

# A command reads more than 255 bytes with several requests, sent back to back;
# at most this many go out before their replies are read, so neither side's
# socket buffer has to hold more than a few KiB of replies.
PIPELINE = 64

Batch = list  # of egd requests
Op = Generator[Batch, list, object]


class EGDError(Exception):
    """Talking to the EGD server failed; the message says where and why."""


class NoSocket(EGDError):
    """The Unix socket path does not exist (is the daemon running?)."""


class Refused(EGDError):
    """Nobody is listening at the address."""


class ShortReply(EGDError):
    """The server closed the connection before its reply was complete."""


class Timeout(EGDError):
    """The server did not answer in time."""


class NotEGD(EGDError):
    """What the server sent is not an EGD reply (an HTTP server, say): never used as randomness."""


def not_egd(address, what: str, sample: bytes = b"") -> NotEGD:
    if sample.startswith(b"HTTP/"):
        line = sample.split(b"\r\n", 1)[0].decode("ascii", "replace")
        return NotEGD(f"{address}: the server answered with HTTP ({line!r}), not EGD: is this an admin socket? "
                      "Give the EGD socket")
    return NotEGD(f"{address}: not an EGD server: {what}")


def _family(a: egd.Address) -> int:
    if a.is_unix:
        return socket.AF_UNIX
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise EGDError(f"{a}: this Python has no AF_VSOCK")
    return family


def _address(address: str | egd.Address) -> egd.Address:
    return address if isinstance(address, egd.Address) else egd.parse_address(address)


def error_for(exc: BaseException, address: egd.Address, doing: str) -> EGDError:
    """The `EGDError` for an OS error met while `doing` something with `address`."""
    if isinstance(exc, EGDError):
        return exc
    if isinstance(exc, socket.timeout):
        return Timeout(f"{address}: no answer while {doing}")
    if isinstance(exc, FileNotFoundError):
        return NoSocket(f"{address}: no such socket (is prngd running?)")
    if isinstance(exc, ConnectionRefusedError):
        return Refused(f"{address}: connection refused (nobody is listening)")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return ShortReply(f"{address}: the server closed the connection while {doing}")
    if isinstance(exc, socket.gaierror):
        return EGDError(f"{address}: cannot resolve host: {exc.strerror}")
    if isinstance(exc, OSError):
        return EGDError(f"{address}: {doing}: {exc.strerror or exc}")
    return EGDError(f"{address}: {doing}: {exc}")


def _payload(req, reply: bytes) -> bytes:
    """A reply without its count byte (0x01 and 0x04 replies start with one)."""
    return reply[1:] if egd.reply_size(req) is None else reply


def _counted_size(req, first: int, address) -> int:
    """The size of a counted reply (0x01, 0x04) from its first byte; NotEGD if it exceeds the request."""
    if isinstance(req, egd.ReadNonBlocking) and first > req.n:
        raise not_egd(address, f"it offered {first} bytes to a request for {req.n}", bytes([first]))
    return egd.reply_size(req, first)


def _batches(requests: Iterable) -> Iterator[list]:
    """Requests in groups of PIPELINE, made as they are needed: a 1 GB read never lists 4 million."""
    it = iter(requests)
    while batch := list(itertools.islice(it, PIPELINE)):
        yield batch


def _reads(kind, n: int) -> Iterator:
    if n < 0:
        raise ValueError("cannot read a negative number of bytes")
    return (kind(min(255, n - i)) for i in range(0, n, 255))


# ---------------------------------------------------------------- commands, once for both clients

def _op_entropy_level() -> Op:
    (reply,) = yield [egd.GetEntropyLevel()]
    return int.from_bytes(reply, "big")


def _op_read(kind, n: int) -> Op:
    out = bytearray()
    for batch in _batches(_reads(kind, n)):
        replies = yield batch
        out += b"".join(replies)
    return bytes(out)


def _write_requests(pieces: Iterable[bytes], bits: int, total: int | None) -> Iterator[egd.WriteEntropy]:
    """0x03 requests for `pieces` (each 1..255 bytes) claiming `bits` in all, never over 8 bits a byte.

    With the `total` length known the claim is spread in proportion (cumulative,
    so the chunks' claims add up to exactly `bits` when `total` bytes come);
    for a stream of unknown length it goes with the first bytes, as fast as
    8 bits a byte allows, so it is all claimed if the stream is long enough.
    """
    start, left = 0, bits
    for piece in pieces:
        end = start + len(piece)
        if total:
            claim = min(bits, bits * end // total) - min(bits, bits * start // total)
        else:
            claim = left
        claim = min(claim, left, 8 * len(piece))
        left -= claim
        start = end
        yield egd.WriteEntropy(claim, piece)


def _pieces(data: bytes) -> Iterator[bytes]:
    return (data[i:i + 255] for i in range(0, len(data), 255))


def read_pieces(fd: int, limit: int | None = None) -> Iterator[bytes]:
    """A file descriptor's bytes in 0x03-sized pieces (255), read as they come, up to `limit` bytes.

    At most one batch (PIPELINE pieces) is held at a time, so a device or an
    endless pipe streams in bounded memory; a slow pipe's bytes go out as they arrive.
    """
    left = limit
    while left is None or left > 0:
        block = os.read(fd, PIPELINE * 255 if left is None else min(PIPELINE * 255, left))
        if not block:
            return
        if left is not None:
            left -= len(block)
        yield from _pieces(block)


class Sent:
    """What a streamed write has handed to the server so far (whole batches only)."""

    __slots__ = ("bytes", "bits")

    def __init__(self, bytes: int = 0, bits: int = 0) -> None:
        self.bytes = bytes
        self.bits = bits

    def __repr__(self) -> str:
        return f"Sent(bytes={self.bytes!r}, bits={self.bits!r})"


def _op_write_stream(pieces: Iterable[bytes], bits: int, total: int | None, sent: Sent) -> Op:
    for batch in _batches(_write_requests(pieces, max(int(bits), 0), total)):
        yield batch
        sent.bytes += sum(len(r.data) for r in batch)
        sent.bits += sum(r.bits for r in batch)
    return sent


def _op_write(data: bytes, bits: int) -> Op:
    """255-byte chunks; the claim is spread over them in proportion and never exceeds 8 bits a byte."""
    data = bytes(data)
    bits = min(max(int(bits), 0), 8 * len(data))
    yield from _op_write_stream(_pieces(data), bits, len(data), Sent())
    return bits


def _op_pid() -> Op:
    (reply,) = yield [egd.GetPid()]
    try:
        return int(reply.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise EGDError(f"the server answered 0x04 with {reply!r}, not a process id") from None


# ---------------------------------------------------------------- blocking client

class EGDClient:
    """A blocking connection to an EGD server at a Unix path or HOST:PORT.

    `timeout` bounds connecting and each round of requests (seconds; None
    waits forever).  Use as a context manager, or call `close()`.
    """

    def __init__(self, address: str | egd.Address, timeout: float | None = 10.0):
        self.address = _address(address)
        self.timeout = timeout
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        a = self.address
        try:
            if a.is_unix or a.is_vsock:
                s = socket.socket(_family(a), socket.SOCK_STREAM)
                try:
                    s.settimeout(self.timeout)
                    s.connect(a.path if a.is_unix else (a.cid, a.port))
                except BaseException:
                    s.close()
                    raise
                return s
            return socket.create_connection((a.host, a.port), timeout=self.timeout)
        except OSError as e:
            raise error_for(e, a, "connecting") from e

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> EGDClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _recv_exact(self, n: int, deadline: float | None) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                self._sock.settimeout(left)
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ShortReply(f"{self.address}: the server closed the connection after {len(buf)} of {n} "
                                 "reply bytes")
            buf += chunk
        return bytes(buf)

    def _exchange(self, batch: list) -> list[bytes]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(b"".join(egd.encode_request(r) for r in batch))
            replies = []
            for req in batch:
                size = egd.reply_size(req)
                if size is None:
                    first = self._recv_exact(1, deadline)
                    reply = first + self._recv_exact(_counted_size(req, first[0], self.address) - 1, deadline)
                else:
                    reply = self._recv_exact(size, deadline)
                replies.append(_payload(req, reply))
            self._check_nothing_more(replies)
            return replies
        except OSError as e:
            raise error_for(e, self.address, "waiting for a reply") from e

    def _check_nothing_more(self, replies: list[bytes]) -> None:
        """Every request is answered: an EGD server has nothing more to say.  More is not EGD."""
        # Non-blocking mode: with a timeout set, Python would wait out EAGAIN instead of raising it.
        self._sock.settimeout(0)
        try:
            extra = self._sock.recv(256, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        finally:
            self._sock.settimeout(self.timeout)
        if extra:
            head = b"".join(replies)[:64] + extra
            raise not_egd(self.address, f"it sent {len(extra)}+ bytes more than the requests asked for", head)

    def _run(self, op: Op):
        try:
            batch = next(op)
            while True:
                batch = op.send(self._exchange(batch))
        except StopIteration as done:
            return done.value

    def entropy_level(self) -> int:
        """The server's entropy estimate, in bits (0x00)."""
        return self._run(_op_entropy_level())

    def read_nonblocking(self, n: int) -> bytes:
        """Up to `n` bytes at once (0x01, one request per 255 bytes); may return fewer."""
        return self._run(_op_read(egd.ReadNonBlocking, n))

    def read(self, n: int) -> bytes:
        """Exactly `n` bytes (0x02, one request per 255 bytes), waiting for the server if it must."""
        return self._run(_op_read(egd.ReadBlocking, n))

    def iter_read(self, n: int) -> Iterator[bytes]:
        """Exactly `n` bytes (0x02) in chunks of at most PIPELINE * 255 bytes, as they arrive.

        Memory stays bounded whatever `n`; stop iterating to stop reading.
        """
        for batch in _batches(_reads(egd.ReadBlocking, n)):
            yield b"".join(self._exchange(batch))

    def write_entropy(self, data: bytes, bits: int = 0) -> int:
        """Give `data` to the server claiming `bits` of entropy (0x03); returns the bits claimed after clamping."""
        return self._run(_op_write(data, bits))

    def write_stream(self, pieces: Iterable[bytes], bits: int = 0, total: int | None = None,
                     sent: Sent | None = None) -> Sent:
        """Stream `pieces` (1..255 bytes each, e.g. `read_pieces(fd)`) to the server with 0x03.

        `bits` is the claim for the whole stream, spread over `total` bytes when
        that is known (see `_write_requests`).  Memory stays bounded whatever the
        stream's length; `sent` (updated batch by batch) says how far it got if
        the stream is interrupted.
        """
        return self._run(_op_write_stream(pieces, bits, total, sent if sent is not None else Sent()))

    def pid(self) -> int:
        """The server's process id (0x04)."""
        return self._run(_op_pid())

    def peer_uid(self) -> int | None:
        """The uid the server listened as (SO_PEERCRED of a Unix socket, from the kernel, not from the
        server's word); None on TCP, whose server cannot be identified this way."""
        return peer_uid(self._sock) if self.address.is_unix else None


# ---------------------------------------------------------------- trio client

class AsyncEGDClient:
    """The trio flavour: `async with await AsyncEGDClient.connect(address) as egd: ...`."""

    def __init__(self, stream: trio.SocketStream, address: egd.Address, timeout: float | None):
        self._stream = stream
        self.address = address
        self.timeout = timeout

    @classmethod
    async def connect(cls, address: str | egd.Address, timeout: float | None = 10.0) -> AsyncEGDClient:
        import trio

        a = _address(address)
        try:
            with trio.fail_after(_forever(timeout)):
                sock = await _trio_connect(a)
        except trio.TooSlowError:
            raise Timeout(f"{a}: no answer while connecting") from None
        except OSError as e:
            raise error_for(e, a, "connecting") from e
        return cls(trio.SocketStream(sock), a, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncEGDClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self._stream.receive_some(n - len(buf))
            if not chunk:
                raise ShortReply(f"{self.address}: the server closed the connection after {len(buf)} of {n} "
                                 "reply bytes")
            buf += chunk
        return bytes(buf)

    async def _exchange(self, batch: list) -> list[bytes]:
        import trio

        try:
            with trio.fail_after(_forever(self.timeout)):
                await self._stream.send_all(b"".join(egd.encode_request(r) for r in batch))
                replies = []
                for req in batch:
                    size = egd.reply_size(req)
                    if size is None:
                        first = await self._recv_exact(1)
                        reply = first + await self._recv_exact(_counted_size(req, first[0], self.address) - 1)
                    else:
                        reply = await self._recv_exact(size)
                    replies.append(_payload(req, reply))
                return replies
        except trio.TooSlowError:
            raise Timeout(f"{self.address}: no answer while waiting for a reply") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise ShortReply(f"{self.address}: the server closed the connection while waiting for a reply") from e
        except OSError as e:
            raise error_for(e, self.address, "waiting for a reply") from e

    async def _run(self, op: Op):
        try:
            batch = next(op)
            while True:
                batch = op.send(await self._exchange(batch))
        except StopIteration as done:
            return done.value

    async def entropy_level(self) -> int:
        return await self._run(_op_entropy_level())

    async def read_nonblocking(self, n: int) -> bytes:
        return await self._run(_op_read(egd.ReadNonBlocking, n))

    async def read(self, n: int) -> bytes:
        return await self._run(_op_read(egd.ReadBlocking, n))

    async def write_entropy(self, data: bytes, bits: int = 0) -> int:
        return await self._run(_op_write(data, bits))

    async def pid(self) -> int:
        return await self._run(_op_pid())


def _forever(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout


async def _trio_connect(a: egd.Address) -> trio.socket.SocketType:
    """A connected trio socket; for TCP, each resolved address in turn, raising the last error."""
    import trio

    if a.is_unix or a.is_vsock:
        targets = [(_family(a), a.path if a.is_unix else (a.cid, a.port))]
    else:
        infos = await trio.socket.getaddrinfo(a.host, a.port, type=socket.SOCK_STREAM)
        targets = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    error: OSError | None = None
    for family, sockaddr in targets:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    assert error is not None
    raise error
