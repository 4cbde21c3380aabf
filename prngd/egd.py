"""The EGD wire protocol as pure data: bytes in, requests out; replies in, bytes out.

No sockets here (the h11 way): the server feeds whatever a read returned to a
`Decoder` and encodes each reply with the functions below, so every rule of the
protocol can be tested, fuzzed and benchmarked without I/O.

    cmd  request              reply
    0x00 00                   4 bytes, entropy estimate in bits, big-endian
    0x01 01 N                 1 byte M, then M bytes (M <= N)
    0x02 02 N                 exactly N bytes
    0x03 03 B1 B0 L data[L]   none; L bytes claimed to carry B1<<8|B0 bits
    0x04 04                   1 byte L, then L ASCII characters (the pid)

Multi-byte integers are big-endian; N and L are one byte, so a request is at
most 4 + 255 = 259 bytes and a decoder never holds more than that of one
request.
"""

from __future__ import annotations

import os
from typing import Iterator, Union

from prngd.value import Value

GET_ENTROPY_LEVEL = 0x00
READ_NONBLOCKING = 0x01
READ_BLOCKING = 0x02
WRITE_ENTROPY = 0x03
GET_PID = 0x04

COMMAND_NAMES = {
    GET_ENTROPY_LEVEL: "entropy_level",
    READ_NONBLOCKING: "read_nonblocking",
    READ_BLOCKING: "read_blocking",
    WRITE_ENTROPY: "write_entropy",
    GET_PID: "get_pid",
}

MAX_REQUEST = 4 + 255


class ProtocolError(Exception):
    """The peer sent something that is not EGD; its connection is to be closed."""


class _Request(Value):
    """A request: immutable, equal to another of its kind with the same fields (prngd.value)."""

    __slots__ = ()
    command: int


class GetEntropyLevel(_Request):
    __slots__ = ()
    command = GET_ENTROPY_LEVEL


class ReadNonBlocking(_Request):
    __slots__ = ("n",)
    command = READ_NONBLOCKING

    def __init__(self, n: int) -> None:
        object.__setattr__(self, "n", n)


class ReadBlocking(_Request):
    __slots__ = ("n",)
    command = READ_BLOCKING

    def __init__(self, n: int) -> None:
        object.__setattr__(self, "n", n)


class WriteEntropy(_Request):
    __slots__ = ("bits", "data")  # bits as claimed; the server clamps and decides whether to credit
    command = WRITE_ENTROPY

    def __init__(self, bits: int, data: bytes) -> None:
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "data", data)


class GetPid(_Request):
    __slots__ = ()
    command = GET_PID


Request = Union[GetEntropyLevel, ReadNonBlocking, ReadBlocking, WriteEntropy, GetPid]

# Stateless requests are shared rather than built for each command.
_ENTROPY_LEVEL = GetEntropyLevel()
_GET_PID = GetPid()
# One object per read size: the hot path allocates nothing to decode a read.
_NONBLOCKING = tuple(ReadNonBlocking(n) for n in range(256))
_BLOCKING = tuple(ReadBlocking(n) for n in range(256))


class Decoder:
    """Incremental request decoder: `feed()` any chunks, then iterate the requests.

    Iterating yields every complete request buffered so far, in order, and
    stops when the rest is incomplete.  An unknown command byte raises
    `ProtocolError`; the decoder is unusable after that.
    """

    __slots__ = ("_buf", "_pos", "_broken", "pending")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._broken = False
        # Bytes held and not yet decoded (0 when the decoder is between
        # requests): an attribute kept up to date rather than a property, as
        # the server asks after every read.
        self.pending = 0

    def feed(self, data: bytes) -> None:
        if self._broken:
            raise ProtocolError("decoder used after a protocol error")
        if self.pending:
            # Keep only the undecoded rest, so the buffer holds at most one
            # incomplete request plus the new chunk.
            self._buf = self._buf[self._pos:] + data
        else:
            self._buf = data  # the common case: everything before was decoded; no copy
        self._pos = 0
        self.pending = len(self._buf)

    def __iter__(self) -> Iterator[Request]:
        return self

    def __next__(self) -> Request:
        req = self.next_request()
        if req is None:
            raise StopIteration
        return req

    def next_request(self) -> Request | None:
        """The next complete request, or None when more bytes are needed."""
        avail = self.pending
        if not avail:
            return None  # checked first: every read ends with this call
        buf, pos = self._buf, self._pos
        cmd = buf[pos]
        if cmd == READ_BLOCKING or cmd == READ_NONBLOCKING:
            if avail < 2:
                return None
            self._pos = pos + 2
            self.pending = avail - 2
            return (_BLOCKING if cmd == READ_BLOCKING else _NONBLOCKING)[buf[pos + 1]]
        if cmd == GET_ENTROPY_LEVEL or cmd == GET_PID:
            self._pos = pos + 1
            self.pending = avail - 1
            return _ENTROPY_LEVEL if cmd == GET_ENTROPY_LEVEL else _GET_PID
        if cmd == WRITE_ENTROPY:
            if avail < 4:
                return None
            size = 4 + buf[pos + 3]
            if avail < size:
                return None
            self._pos = pos + size
            self.pending = avail - size
            return WriteEntropy((buf[pos + 1] << 8) | buf[pos + 2], bytes(buf[pos + 4:pos + size]))
        self._broken = True
        raise ProtocolError(f"unknown command byte 0x{cmd:02x}")


# ---------------------------------------------------------------- requests (client side)

def encode_request(req: Request) -> bytes:
    """The bytes a client sends for `req`."""
    if isinstance(req, (ReadBlocking, ReadNonBlocking)):
        if not 0 <= req.n <= 255:
            raise ValueError("a read asks for 0 to 255 bytes; send several requests for more")
        return bytes((req.command, req.n))
    if isinstance(req, WriteEntropy):
        if len(req.data) > 255:
            raise ValueError("a write carries at most 255 bytes; send several requests for more")
        if not 0 <= req.bits <= 0xFFFF:
            raise ValueError("claimed bits must fit in 16 bits")
        return bytes((WRITE_ENTROPY, req.bits >> 8, req.bits & 0xFF, len(req.data))) + req.data
    return bytes((req.command,))


# ---------------------------------------------------------------- replies (server side)

def encode_entropy_level(bits: int) -> bytes:
    return min(max(bits, 0), 0xFFFFFFFF).to_bytes(4, "big")


# The count bytes, made once: bytes((n,)) builds a tuple and parses it per reply.
_COUNT = tuple(bytes((n,)) for n in range(256))


def encode_nonblocking(data: bytes) -> bytes:
    """Count byte and data, in one buffer: Postfix's tlsmgr reads both with one read."""
    return _COUNT[len(data)] + data


def encode_pid(pid: int | None = None) -> bytes:
    # PRNGD answers "%12ld": tools that parse its answer expect the padding.
    text = b"%12d" % (os.getpid() if pid is None else pid)
    return bytes((len(text),)) + text


# ---------------------------------------------------------------- replies (client side)

def reply_size(req: Request, first: int | None = None) -> int | None:
    """How many reply bytes `req` takes: known at once, or after its first byte (`first`)."""
    if isinstance(req, GetEntropyLevel):
        return 4
    if isinstance(req, ReadBlocking):
        return req.n
    if isinstance(req, WriteEntropy):
        return 0
    # 0x01 and 0x04 start with a count byte.
    return None if first is None else 1 + first


# ---------------------------------------------------------------- addresses

# Options a listening socket may carry after its address (`/run/egd-pool-pr,pr`).
SOCKET_OPTIONS = {"pr": "prediction resistance: every 0x01 and 0x02 read is preceded by a reseed from the kernel"}
# A vsock listener takes connections from any context id (VMADDR_CID_ANY).
VSOCK_CID_ANY = 0xFFFFFFFF


class Address(Value):
    """Where an EGD server listens: a Unix socket path, a TCP host and port, or a vsock context id and port.

    `options` are the listening socket's options (SOCKET_OPTIONS); a client ignores them.
    Immutable and equal by value (prngd.value).
    """

    __slots__ = ("path", "host", "port", "cid", "options")

    def __init__(self, path: str | None = None, host: str | None = None, port: int | None = None,
                 cid: int | None = None, options: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "cid", cid)  # vsock
        object.__setattr__(self, "options", options)

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_vsock(self) -> bool:
        return self.cid is not None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        if self.cid is not None:
            return f"vsock:{self.port}" if self.cid == VSOCK_CID_ANY else f"vsock:{self.cid}:{self.port}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def spec(self) -> str:
        """As it would be written: the address, then its options."""
        return str(self) + "".join("," + o for o in self.options)


def split_options(s: str) -> tuple[str, tuple[str, ...]]:
    """`ADDRESS,OPT,...` into the address and its options; a trailing `,word` that is not an
    option stays part of a Unix path (commas are legal there) and is an error elsewhere."""
    options: list[str] = []
    while "," in s:
        rest, _, word = s.rpartition(",")
        if word.strip() not in SOCKET_OPTIONS:
            break
        options.insert(0, word.strip())
        s = rest
    return s, tuple(dict.fromkeys(options))


def _port(text: str, spec: str) -> int:
    if "," in text:
        word = text.rpartition(",")[2]
        raise ValueError(f"unknown socket option {word!r} in {spec!r} (known: {', '.join(SOCKET_OPTIONS)})")
    if not text.isdigit() or not 0 < int(text) < 2**32:
        raise ValueError(f"not a port number in {spec!r}: {text!r}")
    return int(text)


def parse_address(spec: str) -> Address:
    """A socket as PRNGD and its users spell it.

    `/path` (or any spelling without a colon) is a Unix socket; `tcp/HOST:PORT`
    (PRNGD), `HOST:PORT`, `[V6]:PORT` and `egd:/path` (Postfix's prefix) are
    accepted too, and `vsock:CID:PORT` (`vsock:PORT`: any context id, to
    listen on).  Options may follow: `/run/egd-pool-pr,pr`.
    """
    s, options = split_options(spec.strip())
    if s.startswith("egd:"):
        s = s[4:]
    if s.startswith("unix:"):
        s = s[5:]
    if s.startswith("vsock:"):
        cid, sep, port = s[6:].rpartition(":")
        if sep and not cid.isdigit():
            raise ValueError(f"not vsock:CID:PORT or vsock:PORT: {spec!r}")
        number = _port(port, spec)
        if number > 0xFFFFFFFF or (sep and int(cid) > 0xFFFFFFFF):
            raise ValueError(f"vsock context id and port are 32-bit numbers: {spec!r}")
        return Address(cid=int(cid) if sep else VSOCK_CID_ANY, port=number, options=options)
    if s.startswith("tcp/"):
        s = s[4:]
    elif s.startswith("/") or s.startswith(".") or ":" not in s:
        if not s:
            raise ValueError("empty socket path")
        return Address(path=s, options=options)
    host, sep, port = s.rpartition(":")
    if "," in port:
        _port(port, spec)  # names the unknown option
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a socket path or HOST:PORT: {spec!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Address(host=host or "localhost", port=int(port), options=options)
