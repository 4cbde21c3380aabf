"""The sans-IO codec, without sockets: decoding, encoding, addresses."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prngd import egd
from prngd.egd import (Decoder, GetEntropyLevel, GetPid, ProtocolError, ReadBlocking, ReadNonBlocking,
                       WriteEntropy)

requests = st.one_of(
    st.just(GetEntropyLevel()),
    st.just(GetPid()),
    st.builds(ReadNonBlocking, st.integers(0, 255)),
    st.builds(ReadBlocking, st.integers(0, 255)),
    st.builds(WriteEntropy, st.integers(0, 0xFFFF), st.binary(max_size=255)),
)


def decode_all(chunks) -> list:
    d = Decoder()
    out = []
    for c in chunks:
        d.feed(c)
        out.extend(d)
    assert d.pending == 0
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@given(st.lists(requests, max_size=40), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_chunking_decodes_to_the_same_requests(reqs, cuts):
    stream = b"".join(egd.encode_request(r) for r in reqs)
    assert decode_all([stream]) == reqs
    assert decode_all(split(stream, cuts)) == reqs


@given(st.lists(requests, max_size=20))
def test_byte_by_byte(reqs):
    stream = b"".join(egd.encode_request(r) for r in reqs)
    assert decode_all([stream[i:i + 1] for i in range(len(stream))]) == reqs


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_arbitrary_bytes_raise_nothing_but_protocol_error(chunks):
    d = Decoder()
    try:
        for c in chunks:
            d.feed(c)
            for req in d:
                assert isinstance(req, (GetEntropyLevel, GetPid, ReadNonBlocking, ReadBlocking, WriteEntropy))
    except ProtocolError:
        # Broken for good: feeding more is an error too, never a silent resync.
        with pytest.raises(ProtocolError):
            d.feed(b"\x00")


@given(st.binary(max_size=2000))
def test_buffered_bytes_stay_bounded(data):
    d = Decoder()
    try:
        for i in range(0, len(data), 7):
            d.feed(data[i:i + 7])
            list(d)
            # Never more than one incomplete request is held.
            assert d.pending < egd.MAX_REQUEST
    except ProtocolError:
        pass


@pytest.mark.parametrize("byte", [b for b in range(256) if b > 4])
def test_unknown_command_is_a_protocol_error(byte):
    d = Decoder()
    d.feed(bytes((0x00, byte)))
    assert next(d) == GetEntropyLevel()
    with pytest.raises(ProtocolError, match=f"0x{byte:02x}"):
        next(d)


def test_incomplete_requests_wait_for_more():
    d = Decoder()
    for partial in (b"\x01", b"\x02", b"\x03", b"\x03\x00", b"\x03\x00\x08", b"\x03\x00\x08\x02a"):
        d = Decoder()
        d.feed(partial)
        assert d.next_request() is None
        assert d.pending == len(partial)
    d.feed(b"b")
    assert d.next_request() == WriteEntropy(8, b"ab")


def test_write_entropy_fields():
    d = Decoder()
    d.feed(bytes((3, 0x01, 0x02, 3)) + b"xyz" + bytes((3, 0, 0, 0)))
    assert list(d) == [WriteEntropy(0x0102, b"xyz"), WriteEntropy(0, b"")]


def test_reply_encoders():
    assert egd.encode_entropy_level(4096) == b"\x00\x00\x10\x00"
    assert egd.encode_entropy_level(-5) == b"\x00\x00\x00\x00"
    assert egd.encode_entropy_level(1 << 40) == b"\xff\xff\xff\xff"
    assert egd.encode_nonblocking(b"abc") == b"\x03abc"
    # PRNGD's "%12ld": a length byte of 12, then the pid right-aligned.
    assert egd.encode_pid(4242) == b"\x0c" + b"        4242"


def test_request_encoder_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ValueError):
        egd.encode_request(ReadBlocking(256))
    with pytest.raises(ValueError):
        egd.encode_request(WriteEntropy(8, b"x" * 256))
    with pytest.raises(ValueError):
        egd.encode_request(WriteEntropy(1 << 16, b"x"))


def test_reply_sizes():
    assert egd.reply_size(GetEntropyLevel()) == 4
    assert egd.reply_size(ReadBlocking(7)) == 7
    assert egd.reply_size(WriteEntropy(0, b"")) == 0
    assert egd.reply_size(ReadNonBlocking(9)) is None
    assert egd.reply_size(ReadNonBlocking(9), first=9) == 10
    assert egd.reply_size(GetPid(), first=12) == 13


@pytest.mark.parametrize("spec, expected", [
    ("/var/run/egd-pool", egd.Address(path="/var/run/egd-pool")),
    ("egd-pool", egd.Address(path="egd-pool")),
    ("egd:/var/run/egd-pool", egd.Address(path="/var/run/egd-pool")),
    ("tcp/localhost:708", egd.Address(host="localhost", port=708)),
    ("127.0.0.1:8888", egd.Address(host="127.0.0.1", port=8888)),
    ("[::1]:8888", egd.Address(host="::1", port=8888)),
    (":8888", egd.Address(host="localhost", port=8888)),
])
def test_addresses(spec, expected):
    assert egd.parse_address(spec) == expected


@pytest.mark.parametrize("spec", ["", "host:", "host:0", "host:99999", "tcp/host:port"])
def test_bad_addresses(spec):
    with pytest.raises(ValueError):
        egd.parse_address(spec)


def test_address_is_a_value():
    """Equal by value, hashable and immutable (what config, the listeners and the tools rely on)."""
    a = egd.Address(path="/run/egd-pool", options=("pr",))
    assert a == egd.parse_address("/run/egd-pool,pr")
    assert a != egd.Address(path="/run/egd-pool")
    assert egd.Address("h", None, 1) != egd.Address(host="h", port=1)  # positional order: path, host, port, cid
    assert hash(a) == hash(egd.parse_address("/run/egd-pool,pr"))
    assert len({a, egd.parse_address("/run/egd-pool,pr"), egd.Address(host="localhost", port=708)}) == 2
    assert a != ("/run/egd-pool", None, None, None, ("pr",))
    with pytest.raises(AttributeError):
        a.path = "/elsewhere"
    with pytest.raises(AttributeError):
        del a.options
    assert a.path == "/run/egd-pool"
    assert repr(egd.Address(host="::1", port=8)) == \
        "Address(path=None, host='::1', port=8, cid=None, options=())"
    assert str(a) == "/run/egd-pool" and a.spec == "/run/egd-pool,pr"
