"""Which uid owns the other end of a loopback TCP connection: one sock_diag query, as `ss` asks.

SO_PEERCRED answers only on Unix sockets.  For TCP the kernel's socket
diagnostics (NETLINK_SOCK_DIAG) look a socket up by its exact 4-tuple and
report its owner's uid: the client's socket, seen from its side, has the
client's address as its source and ours as its destination.  The netlink
socket is opened once and kept; the kernel answers a lookup while the request
is being sent, so the reply is read without waiting.

Message layouts (linux/netlink.h, linux/inet_diag.h, linux/sock_diag.h):
    nlmsghdr          len u32, type u16, flags u16, seq u32, pid u32
    inet_diag_req_v2  family u8, protocol u8, ext u8, pad u8, states u32, inet_diag_sockid
    inet_diag_sockid  sport be16, dport be16, src be32[4], dst be32[4], if u32, cookie u32[2]
    inet_diag_msg     family u8, state u8, timer u8, retrans u8, inet_diag_sockid,
                      expires u32, rqueue u32, wqueue u32, uid u32, inode u32
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
IPPROTO_TCP = int(socket.IPPROTO_TCP)

HEADER = struct.Struct("=IHHII")
# The request's fields before the ports; ports and addresses follow in network order, then the interface
# (any) and the cookie (none).
REQUEST_HEAD = struct.Struct("=IHHIIBBBBI")
REQUEST_TAIL = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
REQUEST_SIZE = REQUEST_HEAD.size + 2 + 2 + 16 + 16 + len(REQUEST_TAIL)
# inet_diag_msg: only what we read of it.
MESSAGE = struct.Struct("=BBBB" + "48x" + "IIIII")
ERROR = struct.Struct("=i")
# Header and inet_diag_msg in one: through the state, then the uid.
ANSWER = struct.Struct("=IHHII" + "BB" + "2x48x12x" + "I")
ANSWER_BUFFER = 256

# TCP states whose kernel socket still knows its owner: a connection in
# TIME_WAIT or still in the handshake is reported with uid 0, which must never
# pass for root.
OWNED_STATES = frozenset({1, 4, 5, 8, 9, 11})  # ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING


class Unavailable(OSError):
    """sock_diag cannot answer here at all (no such protocol, not permitted, no reply)."""


def encode_request(family: int, src: tuple, dst: tuple, seq: int) -> bytes:
    """The lookup of the TCP socket bound to `src` and connected to `dst` (sockaddr tuples)."""
    pton = socket.inet_pton
    return b"".join((REQUEST_HEAD.pack(REQUEST_SIZE, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0,
                                       family, IPPROTO_TCP, 0, 0, 0xFFFFFFFF),
                     src[1].to_bytes(2, "big"), dst[1].to_bytes(2, "big"),
                     pton(family, src[0]).ljust(16, b"\0"), pton(family, dst[0]).ljust(16, b"\0"), REQUEST_TAIL))


def decode_reply(data: bytes, seq: int) -> int | None:
    """The uid in an answer to request `seq`; None if there is no such socket (or it lost its owner).

    Raises Unavailable when the kernel refuses sock_diag queries altogether,
    and ValueError for an answer to another request or one cut short.
    """
    if len(data) < HEADER.size:
        raise ValueError("netlink answer shorter than its header")
    length, kind, _, answer_seq, _ = HEADER.unpack_from(data)
    if answer_seq != seq:
        raise ValueError(f"netlink answer to request {answer_seq}, not {seq}")
    if kind == NLMSG_ERROR:
        code = -ERROR.unpack_from(data, HEADER.size)[0]
        if code in (errno.ENOENT, 0):
            return None  # gone before we asked
        raise Unavailable(code, os.strerror(code))
    if kind != SOCK_DIAG_BY_FAMILY or length < HEADER.size + MESSAGE.size or len(data) < length:
        raise ValueError(f"netlink answer of type {kind} and {length} bytes")
    _, state, _, _, _, _, _, uid, _ = MESSAGE.unpack_from(data, HEADER.size)
    return uid if state in OWNED_STATES else None


class SockDiag:
    """One NETLINK_SOCK_DIAG socket, kept open for every lookup (raises Unavailable where there is none)."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK,
                                      socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                                      NETLINK_SOCK_DIAG)
        except OSError as e:
            raise Unavailable(e.errno, e.strerror) from None
        self.seq = 0

    def peer_uid(self, family: int, ours: tuple, theirs: tuple) -> int | None:
        """The uid owning the socket at `theirs` connected to `ours`; None if it is gone.

        The kernel answers while send() runs, so one recv() finds the answer;
        none there means sock_diag does not work here.  Only the message's
        fixed part is read: a buffer under 512 bytes (CPython's small objects)
        cuts off the attributes after it, which nothing here reads.
        """
        self.seq = seq = (self.seq + 1) & 0xFFFFFFFF
        try:
            self.sock.send(encode_request(family, theirs, ours, seq))
            data = self.sock.recv(ANSWER_BUFFER)
        except BlockingIOError:
            raise Unavailable(errno.ETIMEDOUT, "no answer from sock_diag") from None
        except OSError as e:
            raise Unavailable(e.errno, e.strerror) from None
        if len(data) >= ANSWER.size:
            _, kind, _, answer_seq, _, _, state, uid = ANSWER.unpack_from(data)
            if kind == SOCK_DIAG_BY_FAMILY and answer_seq == seq:  # the common answer, read at once
                return uid if state in OWNED_STATES else None
        try:
            return decode_reply(data, seq)
        except ValueError as e:
            raise Unavailable(errno.EBADMSG, f"malformed answer from sock_diag: {e}") from None

    def close(self) -> None:
        self.sock.close()
