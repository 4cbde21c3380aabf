"""EGD client: blocking (`EGDClient`) and trio (`AsyncEGDClient`), plus the command-line tools.

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
complete), `Timeout`; anything else that goes wrong with the socket is an
`EGDError` carrying the OS message.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Generator, Iterable

from prngd import egd

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


def _address(address: str | egd.Address) -> egd.Address:
    return address if isinstance(address, egd.Address) else egd.parse_address(address)


def _translate(exc: BaseException, address: egd.Address, doing: str) -> EGDError:
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


def _batches(requests: list) -> Iterable[list]:
    for i in range(0, len(requests), PIPELINE):
        yield requests[i:i + PIPELINE]


def _reads(kind, n: int) -> list:
    if n < 0:
        raise ValueError("cannot read a negative number of bytes")
    return [kind(min(255, n - i)) for i in range(0, n, 255)]


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


def _op_write(data: bytes, bits: int) -> Op:
    """255-byte chunks; the claim is spread over them in proportion and never exceeds 8 bits a byte."""
    data = bytes(data)
    bits = min(max(int(bits), 0), 8 * len(data))
    requests = []
    for start in range(0, len(data), 255):
        end = min(start + 255, len(data))
        # Cumulative split: the chunks' claims add up to exactly `bits`.
        claim = bits * end // len(data) - bits * start // len(data)
        requests.append(egd.WriteEntropy(claim, data[start:end]))
    for batch in _batches(requests):
        yield batch
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
            if a.is_unix:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.settimeout(self.timeout)
                    s.connect(a.path)
                except BaseException:
                    s.close()
                    raise
                return s
            return socket.create_connection((a.host, a.port), timeout=self.timeout)
        except OSError as e:
            raise _translate(e, a, "connecting") from e

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
                    reply = first + self._recv_exact(egd.reply_size(req, first[0]) - 1, deadline)
                else:
                    reply = self._recv_exact(size, deadline)
                replies.append(_payload(req, reply))
            return replies
        except OSError as e:
            raise _translate(e, self.address, "waiting for a reply") from e

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

    def write_entropy(self, data: bytes, bits: int = 0) -> int:
        """Give `data` to the server claiming `bits` of entropy (0x03); returns the bits claimed after clamping."""
        return self._run(_op_write(data, bits))

    def pid(self) -> int:
        """The server's process id (0x04)."""
        return self._run(_op_pid())


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
            raise _translate(e, a, "connecting") from e
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
                        reply = first + await self._recv_exact(egd.reply_size(req, first[0]) - 1)
                    else:
                        reply = await self._recv_exact(size)
                    replies.append(_payload(req, reply))
                return replies
        except trio.TooSlowError:
            raise Timeout(f"{self.address}: no answer while waiting for a reply") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise ShortReply(f"{self.address}: the server closed the connection while waiting for a reply") from e
        except OSError as e:
            raise _translate(e, self.address, "waiting for a reply") from e

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

    if a.is_unix:
        targets = [(socket.AF_UNIX, a.path)]
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


# ---------------------------------------------------------------- command line

def _byte_count(text: str) -> int:
    n = int(text, 0)
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def _parser() -> argparse.ArgumentParser:
    from prngd import __version__, config

    default = config.default_socket()
    p = argparse.ArgumentParser(prog="prngd", description="Tools that talk to a running prngd (or any EGD server).")
    p.add_argument("--version", action="version", version=f"prngd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def socket_arg(sp):
        sp.add_argument("socket", nargs="?", default=default, metavar="SOCKET",
                        help=f"EGD socket: a path or HOST:PORT (default {default})")
        sp.add_argument("--timeout", type=_positive, default=10.0, help="seconds to wait for an answer (default 10)")

    sp = sub.add_parser("get", help="print N random bytes (raw by default)")
    sp.add_argument("n", type=_byte_count, metavar="N", help="how many bytes (may exceed 255)")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--hex", action="store_const", dest="format", const="hex", help="print hex and a newline")
    fmt.add_argument("--base64", action="store_const", dest="format", const="base64",
                     help="print base64 and a newline")
    socket_arg(sp)

    sp = sub.add_parser("add", help="send a file's bytes to the pool (0x03)")
    sp.add_argument("file", metavar="FILE", help="file to send; - for stdin")
    sp.add_argument("--bits", type=_byte_count, default=0,
                    help="entropy the data is claimed to carry, in bits (default 0; at most 8 a byte; "
                         "prngd credits it only from trusted users)")
    socket_arg(sp)

    sp = sub.add_parser("status", help="the daemon's status, from its admin socket")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")
    sp.add_argument("--admin", metavar="PATH", help="admin socket (default: SOCKET + '.admin')")
    socket_arg(sp)

    sp = sub.add_parser("ping", help="ask the daemon's pid (0x04); exit 1 if it does not answer")
    socket_arg(sp)

    sp = sub.add_parser("feed-kernel", help="keep the kernel's pool topped up from an EGD server")
    socket_arg(sp)
    sp.add_argument("--once", action="store_true", help="feed once, say what was done, and exit")
    sp.add_argument("--interval", type=_positive, default=60.0,
                    help="feed at least this often, whatever entropy_avail says (default 60 s)")
    sp.add_argument("--poll", type=_positive, default=2.0,
                    help="how often to read entropy_avail (default 2 s)")
    sp.add_argument("--bytes", type=_byte_count, default=64, dest="nbytes",
                    help="bytes per regular feed (default 64)")
    sp.add_argument("--no-credit", action="store_true",
                    help="write to the urandom device without crediting, even when allowed to credit")
    sp.add_argument("--entropy-avail", default=None, metavar="PATH", help=argparse.SUPPRESS)
    sp.add_argument("--threshold-file", default=None, metavar="PATH", help=argparse.SUPPRESS)
    sp.add_argument("--urandom", default=None, metavar="PATH", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """`prngd get|add|status|ping|feed-kernel ...`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in commands:
        # Options may come after SOCKET, as in `prngd get 16 --hex /run/egd-pool`:
        # plain parse_args would give SOCKET's slot away at the first positional.
        args = commands[argv[0]].parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    else:
        args = parser.parse_args(argv)  # --help, --version, or a usage error
    try:
        return _COMMANDS[args.command](args)
    except EGDError as e:
        print(f"prngd {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `prngd get 4096 | head -c 16`: the reader left; no traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


def _cmd_get(args) -> int:
    with EGDClient(args.socket, args.timeout) as c:
        data = c.read(args.n)
    if args.format == "hex":
        sys.stdout.write(data.hex() + "\n")
    elif args.format == "base64":
        sys.stdout.write(base64.b64encode(data).decode("ascii") + "\n")
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def _cmd_add(args) -> int:
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as e:
        print(f"prngd add: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 1
    with EGDClient(args.socket, args.timeout) as c:
        bits = c.write_entropy(data, args.bits)
        # 0x03 has no reply: a round trip afterwards shows the server took the writes.
        c.pid()
    note = f" (clamped from {args.bits})" if bits != args.bits else ""
    print(f"sent {len(data)} bytes claiming {bits} bits{note} to {c.address}")
    return 0


def _cmd_ping(args) -> int:
    start = time.perf_counter()
    with EGDClient(args.socket, args.timeout) as c:
        pid = c.pid()
    ms = (time.perf_counter() - start) * 1000
    print(f"{c.address}: pid {pid}, {ms:.2f} ms")
    return 0


def _cmd_status(args) -> int:
    from prngd import admin, config

    path = args.admin or config.admin_socket_for(args.socket)
    try:
        status = admin.get_status(path, args.timeout)
    except (OSError, admin.AdminError) as e:
        err = _translate(e, egd.Address(path=path), "asking for the status")
        print(f"prngd status: {err}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(admin.render_status_json(status).decode("utf-8"))
    else:
        sys.stdout.write(admin.render_status_text(status))
    return 0


def _cmd_feed_kernel(args) -> int:
    from prngd import feedkernel

    return feedkernel.run_cli(args)


_COMMANDS = {"get": _cmd_get, "add": _cmd_add, "status": _cmd_status, "ping": _cmd_ping,
             "feed-kernel": _cmd_feed_kernel}


if __name__ == "__main__":
    sys.exit(main())
