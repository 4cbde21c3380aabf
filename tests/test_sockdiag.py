"""sock_diag lookups: the netlink encoding, then live lookups of TCP connections made in this process."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest

from prngd import sockdiag
from prngd.sockdiag import HEADER, MESSAGE, SockDiag, decode_reply, encode_request


def test_the_request_is_an_exact_4_tuple_lookup():
    req = encode_request(socket.AF_INET, ("127.0.0.3", 40000), ("127.0.0.1", 708), 7)
    assert len(req) == 16 + 56
    length, kind, flags, seq, pid = HEADER.unpack_from(req)
    assert (length, kind, flags, seq, pid) == (72, 20, 1, 7, 0)  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST only: no dump
    family, proto, ext, pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, pad, states) == (socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
    sport, dport = struct.unpack_from(">HH", req, 24)
    assert (sport, dport) == (40000, 708)  # network order
    assert req[28:44] == bytes([127, 0, 0, 3]) + bytes(12)
    assert req[44:60] == bytes([127, 0, 0, 1]) + bytes(12)
    assert struct.unpack_from("=III", req, 60) == (0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, no cookie
    v6 = encode_request(socket.AF_INET6, ("::1", 1), ("::1", 2), 8)
    assert v6[16] == socket.AF_INET6 and v6[28:44] == socket.inet_pton(socket.AF_INET6, "::1")


def answer(seq: int, state: int, uid: int) -> bytes:
    body = MESSAGE.pack(socket.AF_INET, state, 0, 0, 0, 0, 0, uid, 12345)
    return HEADER.pack(HEADER.size + len(body), 20, 0, seq, 0) + body


def error(seq: int, code: int) -> bytes:
    return HEADER.pack(36, 2, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


def test_answers_are_decoded_and_only_owned_sockets_count():
    assert decode_reply(answer(3, 1, 65534), 3) == 65534  # ESTABLISHED
    assert decode_reply(answer(3, 5, 1000), 3) == 1000  # FIN_WAIT2: the client has closed, still its socket
    assert decode_reply(answer(3, 6, 0), 3) is None  # TIME_WAIT reports uid 0: never taken for root
    assert decode_reply(error(3, errno.ENOENT), 3) is None  # gone before we asked
    with pytest.raises(sockdiag.Unavailable) as e:
        decode_reply(error(3, errno.EACCES), 3)
    assert e.value.errno == errno.EACCES
    with pytest.raises(ValueError):
        decode_reply(answer(2, 1, 0), 3)  # an answer to another request
    with pytest.raises(ValueError):
        decode_reply(answer(3, 1, 0)[:40], 3)  # cut short


def connected(family: int, server: str, client: str, as_uid: int | None = None):
    listener = socket.socket(family)
    listener.bind((server, 0))
    listener.listen()
    if as_uid is not None:
        os.seteuid(as_uid)  # the socket's owner is the uid that creates it
    try:
        c = socket.socket(family)
    finally:
        if as_uid is not None:
            os.seteuid(0)
    c.bind((client, 0))
    c.connect(listener.getsockname()[:2])
    accepted, addr = listener.accept()
    listener.close()
    return c, accepted, addr


@pytest.mark.parametrize("family, server, client", [(socket.AF_INET, "127.0.0.1", "127.0.0.4"),
                                                    (socket.AF_INET6, "::1", "::1")])
def test_a_live_connection_is_found_by_its_4_tuple(family, server, client):
    diag = SockDiag()
    as_uid = 65534 if os.geteuid() == 0 else None
    c, accepted, addr = connected(family, server, client, as_uid)
    try:
        ours = accepted.getsockname()
        want = os.geteuid() if as_uid is None else as_uid
        for _ in range(3):  # one netlink socket, many lookups
            assert diag.peer_uid(family, ours, addr) == want
        assert diag.peer_uid(family, addr, ours) in (os.geteuid(), 0)  # the other end: our own socket
        wrong = (addr[0], addr[1] ^ 1) + tuple(addr[2:])
        assert diag.peer_uid(family, ours, wrong) is None  # no such connection
    finally:
        c.close()
        accepted.close()
        diag.close()


def test_a_closed_client_in_time_wait_is_not_anyone():
    diag = SockDiag()
    c, accepted, addr = connected(socket.AF_INET, "127.0.0.1", "127.0.0.5")
    ours = accepted.getsockname()
    c.close()  # the client closes first: its end goes to TIME_WAIT once ours closes
    assert accepted.recv(1) == b""
    accepted.close()
    try:
        assert diag.peer_uid(socket.AF_INET, ours, addr) is None
    finally:
        diag.close()
