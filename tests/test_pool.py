"""Behaviour of prngd.pool.Pool: determinism, mixing, erasure, fork safety, accounting.

Known-answer tests for the primitives are in test_pool_kat.py. Here every pool
gets a deterministic os_random and a settable clock, so runs are repeatable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from Crypto.Cipher import ChaCha20
from Crypto.Hash import BLAKE2b

from prngd.pool import Accumulator, HmacDrbg, NotSeeded, Pool

GENERATORS = ["chacha20", "hmac-drbg"]
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeRandom:
    """Deterministic stand-in for os.urandom: SHAKE-256 of a label and a call counter."""

    def __init__(self, label: bytes = b"test") -> None:
        self.label = label
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return hashlib.shake_256(self.label + struct.pack("<Q", self.calls)).digest(n)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_pool(generator: str = "chacha20", **kw) -> Pool:
    kw.setdefault("os_random", FakeRandom())
    kw.setdefault("clock", FakeClock())
    return Pool(generator=generator, **kw)


def seeded_pool(generator: str = "chacha20", **kw) -> Pool:
    pool = make_pool(generator, **kw)
    pool.add("seed", bytes(range(32)), 256)
    assert pool.seeded
    return pool


def secret_state(obj) -> list[bytes]:
    """Every bytes-like value reachable from obj through attributes and containers."""
    found: list[bytes] = []
    seen: set[int] = set()
    todo = [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(o))
        if isinstance(o, (bytes, bytearray)):
            found.append(bytes(o))
        elif isinstance(o, memoryview):
            if not o.obj is None:
                found.append(o.tobytes())
        elif isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
        elif isinstance(o, types.MethodType):
            todo.append(o.__self__)
        elif not isinstance(o, (int, float, str, bool, type(None))):
            todo.extend(vars(o).values() if hasattr(o, "__dict__") else ())
            for cls in type(o).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if name != "__weakref__" and hasattr(o, name):
                        todo.append(getattr(o, name))
    return found


def appears_in(needle: bytes, haystacks: list[bytes]) -> bool:
    return any(needle in h for h in haystacks)


def live_secrets(pool: Pool) -> list[bytes]:
    """The generator's current keys: ChaCha20 K, or HMAC_DRBG K and V."""
    gen = pool._gen
    if pool.generator_name == "chacha20":
        return [bytes(gen._key)]
    return [bytes(gen._drbg._K), bytes(gen._drbg._V)]


samples = st.lists(
    st.tuples(st.text(max_size=8), st.binary(max_size=64), st.floats(min_value=-10, max_value=600)),
    max_size=6,
)
read_sizes = st.lists(st.integers(min_value=0, max_value=20000), min_size=1, max_size=6)


# --------------------------------------------------------------------------
# Determinism and mixing


@pytest.mark.parametrize("generator", GENERATORS)
@PROPERTY
@given(samples=samples, sizes=read_sizes)
def test_identical_inputs_give_identical_streams(generator, samples, sizes):
    a, b = make_pool(generator), make_pool(generator)
    for pool in (a, b):
        for source, data, bits in samples:
            pool.add(source, data, bits)
    for n in sizes:
        out = a.read(n, allow_unseeded=True)
        assert out == b.read(n, allow_unseeded=True)
        assert len(out) == n
    assert a.stats() == b.stats()


def _blocks_all_differ(x: bytes, y: bytes) -> bool:
    return all(x[i : i + 16] != y[i : i + 16] for i in range(0, len(x) - 15, 16))


@pytest.mark.parametrize("generator", GENERATORS)
@PROPERTY
@given(
    data=st.binary(min_size=1, max_size=200),
    where=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
    bits=st.floats(min_value=0, max_value=300),
)
def test_one_differing_input_byte_changes_all_later_output(generator, data, where, flip, bits):
    """A sample reaches the output at the next reseed; from then on, every block differs."""
    changed = bytearray(data)
    changed[where % len(data)] ^= flip
    a, b = seeded_pool(generator), seeded_pool(generator)
    a.add("src", data, bits)
    b.add("src", bytes(changed), bits)
    a.reseed()
    b.reseed()
    sizes = (16, 255, 4096, 40000) if generator == "chacha20" else (16, 255, 2048)
    for n in sizes:
        assert _blocks_all_differ(a.read(n), b.read(n))


@pytest.mark.parametrize("generator", GENERATORS)
@PROPERTY
@given(data=st.binary(min_size=32, max_size=64), flip=st.integers(min_value=1, max_value=255))
def test_seeding_sample_is_in_the_key_at_once(generator, data, flip):
    """The sample that makes the pool seeded changes the very first seeded read."""
    changed = bytes([data[0] ^ flip]) + data[1:]
    a, b = make_pool(generator), make_pool(generator)
    a.add("seed", data, 256)
    b.add("seed", changed, 256)
    assert a.seeded and b.seeded
    assert _blocks_all_differ(a.read(256), b.read(256))


@pytest.mark.parametrize("generator", GENERATORS)
def test_source_name_and_boundaries_matter(generator):
    def first(samples):
        pool = make_pool(generator)
        for s in samples:
            pool.add(*s)
        pool.reseed()
        return pool.read(64, allow_unseeded=True)

    base = first([("ab", b"c", 0)])
    assert base == first([("ab", b"c", 0)])
    assert base != first([("a", b"bc", 0)])
    assert base != first([("ab", b"c", 0), ("", b"", 0)])
    assert first([("x", b"12", 0)]) != first([("x", b"1", 0), ("x", b"2", 0)])


def test_accumulator_framing_is_injective_on_examples():
    def digest(samples):
        acc = Accumulator()
        for s in samples:
            acc.add(s[0], s[1], 0)
        return acc.extract()

    cases = [
        [("ab", b"c")],
        [("a", b"bc")],
        [("abc", b"")],
        [("a", b"b"), ("", b"c")],
        [("", b"")],
        [],
    ]
    assert len({digest(c) for c in cases}) == len(cases)


def test_accumulator_restarts_after_extract():
    acc = Accumulator()
    empty = acc.extract()
    acc.add("s", b"x" * 8, 64)
    assert acc.pending_bits == 64
    assert acc.extract() != empty
    assert acc.pending_bits == 0
    assert acc.extract() == empty  # restarted: nothing of the old state is left in it
    assert acc.credited_total == 64  # lifetime statistics survive


# --------------------------------------------------------------------------
# Reseeding


@pytest.mark.parametrize("generator", GENERATORS)
def test_reseed_changes_the_stream(generator):
    a, b = seeded_pool(generator), seeded_pool(generator)
    assert a.read(100) == b.read(100)
    before = a.stats()["reseeds"]
    a.reseed()  # no new samples: the key still moves on
    assert a.stats()["reseeds"] == before + 1
    assert _blocks_all_differ(a.read(1000), b.read(1000))


@pytest.mark.parametrize("generator", GENERATORS)
def test_reseed_after_reseed_bits_of_new_credit(generator):
    pool = seeded_pool(generator, reseed_bits=256)
    r0 = pool.stats()["reseeds"]
    pool.add("s", b"x" * 100, 255)
    assert pool.stats()["reseeds"] == r0
    pool.add("s", b"y", 1)
    assert pool.stats()["reseeds"] == r0 + 1
    pool.add("s", b"z" * 100, 255)  # the counter restarted with the accumulator
    assert pool.stats()["reseeds"] == r0 + 1


@pytest.mark.parametrize("generator", GENERATORS)
def test_reseed_on_interval_checked_in_read(generator):
    clock = FakeClock(500.0)
    pool = make_pool(generator, clock=clock, reseed_interval=60.0)
    clock.t += 1000
    pool.read(10, allow_unseeded=True)
    assert pool.stats()["reseeds"] == 0  # no timed reseeds before seeded
    pool.add("seed", b"s" * 32, 256)
    assert pool.stats()["reseeds"] == 1
    clock.t += 59.9
    pool.read(10)
    assert pool.stats()["reseeds"] == 1
    assert pool.stats()["last_reseed_age_s"] == pytest.approx(59.9)
    clock.t += 0.1
    pool.read(10)
    assert pool.stats()["reseeds"] == 2
    assert pool.stats()["last_reseed_age_s"] == 0


@pytest.mark.parametrize("generator", GENERATORS)
def test_interval_reseed_changes_the_stream(generator):
    ca, cb = FakeClock(), FakeClock()
    a, b = seeded_pool(generator, clock=ca), seeded_pool(generator, clock=cb)
    ca.t += 61
    assert _blocks_all_differ(a.read(512), b.read(512))


def test_reseed_discards_the_chacha20_buffer():
    pool = seeded_pool("chacha20")
    pool.read(10)
    gen = pool._gen
    assert gen._pos == 32 + 10
    pool.reseed()
    assert gen._pos == gen._size
    assert not any(gen._buf)


# --------------------------------------------------------------------------
# Backtracking resistance: what produced (or was) the output is gone


@pytest.mark.parametrize("generator", GENERATORS)
@PROPERTY
@given(sizes=st.lists(st.integers(min_value=16, max_value=40000), min_size=1, max_size=8))
def test_keys_that_made_output_are_gone(generator, sizes):
    """After every read, no key but the current one is anywhere in the pool, and the
    current one has produced nothing yet (chacha20 replaces K before serving a refill)."""
    pool = seeded_pool(generator, buffer_size=16384)
    seen: set[bytes] = set()
    for n in sizes:
        seen.update(live_secrets(pool))
        out = pool.read(n)
        state = secret_state(pool)
        current = set(live_secrets(pool))
        for key in seen - current:
            assert not appears_in(key, state), "an earlier key is still in the pool"
        assert not appears_in(out, state), "served bytes are still in the pool"
    assert len(seen | current) > 1  # the key did move on


def test_served_bytes_are_zeroed_in_the_chacha20_buffer():
    pool = seeded_pool("chacha20")
    gen = pool._gen
    for n in (1, 255, 1000, 5000):
        start = gen._pos if gen._pos + n <= gen._size else 32
        out = pool.read(n)
        assert len(out) == n
        assert gen._buf[start : start + n] == bytes(n)
        assert not any(gen._buf[:32])  # the next key never waits in the buffer
        assert any(gen._buf[gen._pos :])  # unserved keystream is still there


def test_chacha20_buffer_holds_only_future_output():
    """Everything nonzero in the buffer is exactly what the next reads return."""
    pool = seeded_pool("chacha20", buffer_size=1024)
    pool.read(100)
    gen = pool._gen
    waiting = bytes(gen._buf[gen._pos :])
    assert pool.read(len(waiting)) == waiting
    assert not any(gen._buf)


@pytest.mark.parametrize("generator", GENERATORS)
def test_large_read_erases_its_key(generator):
    pool = seeded_pool(generator, buffer_size=4096)
    before = live_secrets(pool)
    out = pool.read(3 * 65536 + 7)
    state = secret_state(pool)
    assert len(out) == 3 * 65536 + 7
    assert not any(appears_in(k, state) for k in before)


def test_secret_state_walker_finds_the_key():
    """The walker must see the live key, or the erasure tests prove nothing."""
    for generator in GENERATORS:
        pool = seeded_pool(generator)
        state = secret_state(pool)
        assert all(appears_in(k, state) for k in live_secrets(pool))


# --------------------------------------------------------------------------
# Fork safety


def _read_in_child(pool: Pool, n: int) -> tuple[bytes, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            payload = struct.pack("<I", pool.stats()["reseeds"]) + pool.read(n)
            os.write(w, payload)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    data = b"".join(chunks)
    assert len(data) == 4 + n
    return data[4:], struct.unpack("<I", data[:4])[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("generator", GENERATORS)
def test_forked_child_does_not_repeat_parent(generator):
    # Injected, deterministic os_random: the worst case, the child can only
    # differ through the fork hook.
    pool = seeded_pool(generator)
    pool.read(100)
    reseeds = pool.stats()["reseeds"]
    child1, child1_reseeds = _read_in_child(pool, 4096)
    child2, _ = _read_in_child(pool, 4096)
    parent = pool.read(4096)
    assert child1_reseeds == reseeds + 1  # the hook ran in the child
    assert pool.stats()["reseeds"] == reseeds  # and not in the parent
    assert _blocks_all_differ(child1, parent)
    assert _blocks_all_differ(child2, parent)
    assert _blocks_all_differ(child1, child2)


# --------------------------------------------------------------------------
# Pinned output of our own construction


# Computed once from the implementation (and cross-checked by the two
# rebuild tests below), then pinned: (generator, prediction_resistance, drbg_hash).
PINNED = {
    ("chacha20", False, "sha256"): (
        "cd7f7cd16ae73bee4aa9a1e4f2ea84046eb926e1eb97e668b89c04a4f5c83cf1"
        "b20d56ca333eb2a7ebe933979a2a59270a3433a049e8b0274be89bb6fd1cc3fd"
    ),
    # The first request takes fresh input as additional input, which SP 800-90A
    # makes the same Update as prediction resistance's reseed from the same bytes:
    # hence the same first 64 bytes as ("hmac-drbg", True, "sha256").
    ("hmac-drbg", False, "sha256"): (
        "862856eb49721a88321439ce633af8626456ee5f1008177390756914b670dabd"
        "c852d4669374538a2ba8c587426ab338dee588b7c76941255ef61da55416e800"
    ),
    ("hmac-drbg", False, "sha512"): (
        "c806a9e7d41c75a819fda5d503d44d7d6c8336970ba85efc3186d5cb68679a1b"
        "ee7630a0772cd591ae02da92c72a64660eb53f23103ab79b3db8a317ae71c63b"
    ),
    ("hmac-drbg", True, "sha256"): (
        "862856eb49721a88321439ce633af8626456ee5f1008177390756914b670dabd"
        "c852d4669374538a2ba8c587426ab338dee588b7c76941255ef61da55416e800"
    ),
}


@pytest.mark.parametrize("generator,pr,hash", list(PINNED), ids=["-".join(map(str, k)) for k in PINNED])
def test_pinned_first_64_bytes(generator, pr, hash):
    """Guards against accidental changes to the construction (KDF, framing, labels, layout)."""
    pool = Pool(
        generator=generator,
        drbg_hash=hash,
        prediction_resistance=pr,
        os_random=FakeRandom(b"pinned"),
        clock=FakeClock(0.0),
        clocks=lambda: (0, 0, 0),
    )
    pool.add("pinned-a", b"0123456789abcdef" * 2, 128)
    pool.add("pinned-b", bytes(range(48)), 200)
    assert pool.seeded
    pool.add("pinned-c", b"uncredited", 0)
    pool.reseed()
    assert pool.read(64).hex() == PINNED[(generator, pr, hash)]


def _pinned_digests() -> tuple[bytes, bytes]:
    """The accumulator digests of the pinned run, from the framing in pool.py's header."""

    def frame(source: str, data: bytes) -> bytes:
        name = source.encode()
        return struct.pack("<I", len(name)) + name + struct.pack("<Q", len(data)) + data

    label = b"prngd pool accumulator v1"
    d1 = BLAKE2b.new(
        digest_bits=512,
        data=label + frame("pinned-a", b"0123456789abcdef" * 2) + frame("pinned-b", bytes(range(48))),
    ).digest()
    d2 = BLAKE2b.new(digest_bits=512, data=label + frame("pinned-c", b"uncredited")).digest()
    return d1, d2


def test_pinned_chacha20_rebuilt_from_the_documented_construction():
    """K0 = KDF(0, init, os_random(32)); K1 = KDF(K0, reseed, D1); K2 = KDF(K1, reseed, D2);
    the read refills: K3 = KDF(K2, refill, R) with R the next 32 fresh bytes (os_random, injected);
    output = ChaCha20(K3, nonce 0, counter 0)[32:96]."""

    def kdf(key: bytes, label: bytes, material: bytes) -> bytes:
        return BLAKE2b.new(digest_bits=256, key=key, data=bytes([len(label)]) + label + material).digest()

    d1, d2 = _pinned_digests()
    rnd = FakeRandom(b"pinned")
    key = kdf(bytes(32), b"prngd pool init", rnd(32))
    key = kdf(key, b"prngd pool reseed", d1)
    key = kdf(key, b"prngd pool reseed", d2)
    key = kdf(key, b"prngd pool refill", rnd(32))
    stream = ChaCha20.new(key=key, nonce=bytes(12)).encrypt(bytes(96))
    assert stream[32:96].hex() == PINNED[("chacha20", False, "sha256")]


@pytest.mark.parametrize("hash", ["sha256", "sha512"])
def test_pinned_hmac_drbg_rebuilt_from_the_documented_construction(hash):
    """Instantiate(os_random(32), os_random(16), pers); Reseed(D1, label); Reseed(D2, label);
    Generate(64, additional_input = R), R the next 32 fresh bytes (the first request takes fresh input)."""
    d1, d2 = _pinned_digests()
    rnd = FakeRandom(b"pinned")
    drbg = HmacDrbg(rnd(32), rnd(16), b"prngd pool hmac-drbg", hash=hash)
    drbg.reseed(d1, b"prngd pool reseed")
    drbg.reseed(d2, b"prngd pool reseed")
    assert drbg.generate(64, rnd(32)).hex() == PINNED[("hmac-drbg", False, hash)]


# --------------------------------------------------------------------------
# Lengths and repeats


def test_every_length_up_to_64k_chacha20():
    pool = seeded_pool("chacha20")
    for n in range(65537):
        if len(pool.read(n)) != n:
            pytest.fail(f"read({n}) returned the wrong length")


def test_lengths_hmac_drbg():
    """HMAC_DRBG runs at a few MB/s here, so: every n to 1024, then request boundaries."""
    pool = seeded_pool("hmac-drbg")
    sizes = list(range(1025)) + [4095, 4096, 4097, 65535, 65536, 65537, 131073]
    for n in sizes:
        assert len(pool.read(n)) == n


@pytest.mark.parametrize("generator", GENERATORS)
def test_multi_megabyte_read(generator):
    n = 5_000_000 if generator == "chacha20" else 400_000
    pool = seeded_pool(generator)
    out = pool.read(n)
    assert len(out) == n
    assert out.count(0) < n // 128  # not a zeroed buffer
    assert pool.stats()["bytes_out"] == n


@pytest.mark.parametrize("generator", GENERATORS)
def test_read_zero_and_negative(generator):
    pool = seeded_pool(generator)
    state = secret_state(pool)
    assert pool.read(0) == b""
    assert secret_state(pool) == state
    with pytest.raises(ValueError):
        pool.read(-1)


def test_no_32_byte_repeats_in_a_million_chacha20_draws():
    pool = seeded_pool("chacha20")
    draws = {pool.read(32) for _ in range(1_000_000)}
    assert len(draws) == 1_000_000


def test_no_32_byte_repeats_hmac_drbg():
    """10^4 draws: HMAC_DRBG costs ~60 us per draw here, 10^6 would take a minute."""
    pool = seeded_pool("hmac-drbg")
    draws = {pool.read(32) for _ in range(10_000)}
    assert len(draws) == 10_000


# --------------------------------------------------------------------------
# Entropy accounting


@pytest.mark.parametrize("generator", GENERATORS)
def test_not_seeded_before_256_credited_bits(generator):
    pool = make_pool(generator)
    assert not pool.seeded
    assert pool.entropy_bits == 0
    with pytest.raises(NotSeeded):
        pool.read(1)
    assert len(pool.read(16, allow_unseeded=True)) == 16
    pool.add("a", b"x" * 100, 255)
    assert not pool.seeded
    with pytest.raises(NotSeeded):
        pool.read(1)
    assert pool.stats()["reseeds"] == 0
    pool.add("b", b"y", 1)
    assert pool.seeded
    assert pool.stats()["reseeds"] == 1  # reseeded at the moment it flipped
    assert len(pool.read(1)) == 1


def test_seeded_counts_total_credit_not_entropy_estimate():
    pool = make_pool()
    pool.add("a", b"x" * 16, 128)
    pool.read(100, allow_unseeded=True)  # estimate drops to 0 (no floor yet)
    assert pool.entropy_bits == 0
    pool.add("a", b"x" * 16, 128)
    assert pool.seeded
    assert pool.entropy_bits == 256  # the floor applies from now on


def test_credit_clamping():
    pool = make_pool()
    pool.add("a", b"xy", 100)  # at most 8 bits per byte
    assert pool.entropy_bits == 16
    pool.add("a", b"xy", -5)
    pool.add("a", b"xy", math.nan)
    pool.add("a", b"", 50)
    assert pool.entropy_bits == 16
    pool.add("b", b"xyz", math.inf)
    pool.add("b", b"xyz", 2.5)
    assert pool.stats()["credited_bits_total"] == 16 + 24 + 2.5
    assert pool.entropy_bits == 42
    assert pool.stats()["samples_by_source"] == {"a": 4, "b": 2}
    assert pool.stats()["credited_bits_by_source"] == {"a": 16.0, "b": 26.5}


def test_cap_floor_and_read_cost():
    pool = make_pool(pool_bits=4096, floor_bits=256)
    pool.add("a", b"x" * 4096, 8 * 4096)
    assert pool.entropy_bits == 4096  # capped
    pool.read(100)
    assert pool.entropy_bits == 4096 - 800
    pool.read(10_000)
    assert pool.entropy_bits == 256  # floor
    pool.read(10)
    assert pool.entropy_bits == 256
    pool.add("a", b"x" * 8, 64)
    assert pool.entropy_bits == 320


def test_custom_thresholds():
    pool = make_pool(seed_bits=64, floor_bits=100, pool_bits=1000)
    pool.add("a", b"x" * 8, 63)
    assert not pool.seeded
    pool.add("a", b"x", 1)
    assert pool.seeded and pool.entropy_bits == 100
    assert Pool(seed_bits=0, os_random=FakeRandom(), clock=FakeClock()).seeded


def test_stats_content_and_json():
    clock = FakeClock(100.0)
    pool = make_pool("hmac-drbg", clock=clock)
    pool.add("kernel", b"k" * 32, 256)
    pool.add("jitter", b"j" * 10, 3)
    pool.add("jitter", b"j" * 10, 0)
    pool.read(1000)
    clock.t += 7.5
    s = pool.stats()
    assert json.loads(json.dumps(s)) == s
    assert s == {
        "generator": "hmac-drbg",
        "seeded": True,
        "entropy_bits": 256,
        "reseeds": 1,
        "bytes_out": 1000,
        "credited_bits_total": 259.0,
        "credited_bits_by_source": {"kernel": 256.0, "jitter": 3.0},
        "samples_by_source": {"kernel": 1, "jitter": 2},
        "last_reseed_age_s": 7.5,
        "clock_reseeds": 0,
        "detectors": ["boottime-gap", "realtime-jump"],
        "pr_reseeds": 0,
    }
    assert pool.generator_name == "hmac-drbg"
    assert isinstance(pool.entropy_bits, int)


def test_add_accepts_bytes_like_and_rejects_others():
    pool = make_pool()
    pool.add("a", bytearray(b"abc"), 8)
    pool.add("a", memoryview(b"abcd"), 8)
    assert pool.stats()["credited_bits_total"] == 16
    with pytest.raises(TypeError):
        pool.add("a", "text", 8)
    with pytest.raises(TypeError):
        pool.add(b"a", b"x", 8)


def test_prediction_resistance_draws_os_random_per_request():
    rnd = FakeRandom()
    pool = seeded_pool("hmac-drbg", prediction_resistance=True, os_random=rnd)
    calls = rnd.calls
    pool.read(10)
    assert rnd.calls == calls + 1
    pool.read(3 * 65536)  # three Generate requests
    assert rnd.calls == calls + 4
    # The first request of each reseeds (PR) or takes additional input (plain, fresh
    # input) from the same os_random bytes, which SP 800-90A makes the same Update;
    # from the second request on, only the PR pool draws os_random again.
    plain, pr = seeded_pool("hmac-drbg"), seeded_pool("hmac-drbg", prediction_resistance=True)
    assert pr.read(64) == plain.read(64)
    assert pr.read(64) != plain.read(64)


def test_sha512_option():
    a = seeded_pool("hmac-drbg", drbg_hash="sha512")
    b = seeded_pool("hmac-drbg", drbg_hash="sha256")
    assert len(a._gen._drbg._K) == 64
    assert a.read(64) != b.read(64)


@pytest.mark.parametrize(
    "kw",
    [
        {"generator": "rc4"},
        {"drbg_hash": "md5"},
        {"prediction_resistance": True},  # chacha20 has no prediction resistance
        {"floor_bits": 5000},
        {"pool_bits": -1},
        {"reseed_interval": 0},
        {"buffer_size": 32},
    ],
)
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        Pool(os_random=FakeRandom(), clock=FakeClock(), **kw)


def test_default_os_random_and_clock():
    pool = Pool()
    pool.add("kernel", os.urandom(32), 256)
    assert pool.seeded and len(pool.read(255)) == 255


def test_on_seeded_fires_once_when_credit_reaches_the_threshold():
    from prngd.pool import Pool

    calls = []
    pool = Pool(os_random=lambda n: bytes(n), clock=lambda: 0.0)
    pool.on_seeded = lambda: calls.append(pool.seeded)
    pool.add("a", b"x" * 16, 128)
    assert calls == []
    pool.add("a", b"y" * 16, 128)
    pool.add("a", b"z" * 16, 128)
    assert calls == [True]  # once, and already seeded when called


# --------------------------------------------------------------------------
# Copies of one running pool (issue 13): fresh kernel input at each refill, clock checks


class Kernel:
    """A kernel's getrandom for a pool: shared by copies until a restore gives each its own."""

    def __init__(self, label: bytes) -> None:
        self.rnd = FakeRandom(label)
        self.ready = True

    def __call__(self, n: int):
        return self.rnd(n) if self.ready else None


class FakeClocks:
    """(monotonic, boottime, realtime) in ns, moved by hand."""

    def __init__(self) -> None:
        self.mono, self.boot, self.real = 5_000_000_000, 5_000_000_000, 1_700_000_000_000_000_000

    def __call__(self):
        return self.mono, self.boot, self.real

    def run(self, seconds: float) -> None:
        ns = int(seconds * 1e9)
        self.mono += ns
        self.boot += ns
        self.real += ns


def snapshot_twins(generator: str, **kw):
    """Two pools in the same state, as a VM snapshot restored twice leaves them, and their kernels."""
    pools, kernels = [], []
    clocks_factory = kw.pop("clocks_factory", FakeClocks)
    for _ in range(2):
        kernel = Kernel(b"kernel before the snapshot")
        pool = make_pool(generator, os_random=FakeRandom(b"snapshot"), fresh_random=kernel,
                         clocks=clocks_factory(), buffer_size=1024, **kw)
        pool.add("seed", bytes(range(32)), 256)
        pools.append(pool)
        kernels.append(kernel)
    assert pools[0].read(300) == pools[1].read(300)  # the same state: the same bytes
    return pools, kernels


def _left_before_fresh_input(pool) -> int:
    """How much output the generator gives before it next takes fresh input (test-only introspection)."""
    gen = pool._gen
    if pool.generator_name == "chacha20":
        return gen._size - gen._pos
    return max(0, gen._left)


@pytest.mark.parametrize("generator", GENERATORS)
def test_copies_diverge_from_the_next_refill(generator):
    (a, b), (ka, kb) = snapshot_twins(generator)
    # Restored twice: each copy's kernel now gives its own bytes (it reseeds on a VM generation change).
    ka.rnd, kb.rnd = FakeRandom(b"copy a"), FakeRandom(b"copy b")
    left = _left_before_fresh_input(a)
    assert 0 <= left < 1024
    # What is left of the current buffer is shared: at most one buffer of output...
    assert a.read(left) == b.read(left)
    # ...and from the next refill on, nothing is.
    outa, outb = a.read(20000), b.read(20000)
    assert _blocks_all_differ(outa, outb)
    assert _blocks_all_differ(a.read(100_000), b.read(100_000))  # large reads too


@pytest.mark.parametrize("generator", GENERATORS)
def test_copies_whose_kernel_is_not_ready_take_no_fresh_input(generator):
    (a, b), (ka, kb) = snapshot_twins(generator)
    ka.ready = kb.ready = False  # getrandom would block: nothing is mixed, nothing waits
    assert a.read(5000) == b.read(5000)
    ka.ready = kb.ready = True
    ka.rnd, kb.rnd = FakeRandom(b"copy a"), FakeRandom(b"copy b")
    a.read(_left_before_fresh_input(a))
    b.read(_left_before_fresh_input(b))
    assert _blocks_all_differ(a.read(4096), b.read(4096))


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("event,words", [
    ("suspend", "suspended"),
    ("restore", "wall clock jumped"),
])
def test_resume_or_restore_reseeds_at_once(generator, event, words):
    clocks_a, clocks_b = FakeClocks(), FakeClocks()
    clocks = iter([clocks_a, clocks_b])
    (a, b), (ka, kb) = snapshot_twins(generator, clocks_factory=lambda: next(clocks))
    ka.rnd, kb.rnd = FakeRandom(b"copy a"), FakeRandom(b"copy b")
    reseeds = a.stats()["reseeds"]
    for c in (clocks_a, clocks_b):
        c.run(2.0)
        if event == "suspend":
            c.boot += 3600 * 10**9  # an hour asleep: CLOCK_BOOTTIME counted it, CLOCK_MONOTONIC did not
            c.real += 3600 * 10**9
        else:
            c.real += 86400 * 10**9  # the snapshot's wall clock, corrected a day later
    (reason,) = a.check_clocks()
    assert words in reason
    assert a.stats()["reseeds"] == reseeds + 1 and a.stats()["clock_reseeds"] == 1
    assert a.check_clocks() == []  # one event, reported once
    assert b.check_clocks()
    # Reseeded at once: the copies differ from the very next byte, mid-buffer.
    assert _blocks_all_differ(a.read(256), b.read(256))


@pytest.mark.parametrize("generator", GENERATORS)
def test_a_requested_reseed_makes_restored_copies_differ_at_once(generator):
    """`prngd reseed`: a restore only a snapshot tool knows of (the clocks show nothing)."""
    (a, b), (ka, kb) = snapshot_twins(generator)
    ka.rnd, kb.rnd = FakeRandom(b"copy a"), FakeRandom(b"copy b")
    reseeds = a.stats()["reseeds"]
    a.reseed_from_kernel()
    b.reseed_from_kernel()
    assert a.stats()["reseeds"] == reseeds + 1 and a.stats()["clock_reseeds"] == 0
    assert a.check_clocks() == []  # not a clock event
    assert _blocks_all_differ(a.read(256), b.read(256))  # mid-buffer, from the very next byte


@pytest.mark.parametrize("generator", GENERATORS)
def test_refill_notices_a_resume_and_check_clocks_reports_it_once(generator):
    clocks = FakeClocks()
    pool = make_pool(generator, clocks=clocks, buffer_size=1024)
    pool.add("seed", bytes(32), 256)
    pool.read(10)
    reseeds = pool.stats()["reseeds"]
    clocks.boot += 30 * 10**9
    pool.read(5000)  # passes a refill (chacha20) or the fresh-input budget (hmac-drbg)
    assert pool.stats()["reseeds"] == reseeds + 1
    events = pool.check_clocks()
    assert len(events) == 1 and "suspended" in events[0]
    assert pool.check_clocks() == []


def test_ordinary_time_passing_and_ntp_slew_are_not_events():
    clocks = FakeClocks()
    pool = make_pool(clocks=clocks)
    pool.add("seed", bytes(32), 256)
    reseeds = pool.stats()["reseeds"]
    for _ in range(10):
        clocks.run(5.0)
        assert pool.check_clocks() == []
    clocks.run(3600.0)
    clocks.real += int(3600e9 * 0.0005)  # 500 ppm slew over an hour: 1.8 s, within the allowance
    assert pool.check_clocks() == []
    clocks.real -= int(0.5e9)  # a half-second NTP step
    assert pool.check_clocks() == []
    assert pool.stats()["reseeds"] == reseeds and pool.stats()["clock_reseeds"] == 0


def test_read_itself_never_looks_at_the_clocks():
    """The hot path stays as it was: clocks are read at refills and in check_clocks only."""
    reads = [0]

    def counting_clocks():
        reads[0] += 1
        return (1, 1, 1)

    pool = make_pool(clocks=counting_clocks, buffer_size=16384)
    pool.add("seed", bytes(32), 256)
    pool.read(1)  # the first refill
    before = reads[0]
    for _ in range(60):
        pool.read(255)  # all within the same buffer
    assert reads[0] == before


def test_default_fresh_input_is_the_kernels():
    from prngd import pool as pool_mod

    assert len(pool_mod.kernel_random(32)) == 32  # this machine's kernel is ready
    p = Pool()
    assert p._fresh_random is pool_mod.kernel_random
    injected = FakeRandom()
    assert Pool(os_random=injected)._fresh_random is injected  # tests stay deterministic
    mono, boot, real = pool_mod.read_clocks()
    assert boot >= mono > 0 and real > 0
