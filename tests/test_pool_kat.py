"""Known-answer tests for the primitives under prngd.pool.

Vectors live in tests/vectors/ (sources in tests/vectors/README.md):

- RFC 8439 ChaCha20 (sections 2.3.2 and 2.4.2, appendices A.1 and A.2), run
  through prngd.pool.chacha20_xor_into, the one function through which the
  chacha20 generator makes all its keystream;
- NIST CAVP HMAC_DRBG SHA-256 (30 cases without prediction resistance, 240
  with) and SHA-512 (240 with), run against prngd.pool.HmacDrbg, using the
  same generate(..., entropy_pr=...) call the pool makes for prediction
  resistance.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prngd.pool import ChaCha20Generator, HmacDrbg, chacha20_xor_into

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> list[dict]:
    with open(VECTORS / name) as f:
        return json.load(f)


def _h(value) -> bytes:
    """Hex to bytes; null and "" are the empty string."""
    return bytes.fromhex(value) if value else b""


# --------------------------------------------------------------------------
# RFC 8439 ChaCha20

RFC8439 = _load("chacha20-rfc8439.json")


@pytest.mark.parametrize("v", RFC8439, ids=[v["name"] for v in RFC8439])
def test_rfc8439_chacha20(v):
    src = _h(v["plaintext"])
    dst = bytearray(len(src))
    chacha20_xor_into(_h(v["key"]), src, dst, nonce=_h(v["nonce"]), counter=v["counter"])
    assert dst.hex() == v["ciphertext"]


@pytest.mark.parametrize("v", RFC8439, ids=[v["name"] for v in RFC8439])
def test_rfc8439_chacha20_in_place(v):
    """In place (src is dst), as the generator's large reads use it."""
    buf = bytearray(_h(v["plaintext"]))
    view = memoryview(buf)
    chacha20_xor_into(_h(v["key"]), view, view, nonce=_h(v["nonce"]), counter=v["counter"])
    assert buf.hex() == v["ciphertext"]


def test_generator_refill_is_rfc8439_keystream():
    """With key 0 the generator's first refill is RFC 8439 A.1 #1 (key 0, nonce 0, counter 0):
    bytes 0..31 become the next key, and output starts at byte 32."""
    a1 = bytes.fromhex(next(v for v in RFC8439 if v["name"] == "rfc8439-A.1-1")["ciphertext"])
    a1_block2 = bytes.fromhex(next(v for v in RFC8439 if v["name"] == "rfc8439-A.1-2")["ciphertext"])
    gen = ChaCha20Generator(b"", buffer_size=128)
    gen._key[:] = bytes(32)  # test-only: put the generator in a known state
    out = gen.read(96)
    assert out == a1[32:] + a1_block2
    assert bytes(gen._key) == a1[:32]


def test_generator_large_read_is_rfc8439_keystream():
    """A read bigger than the buffer is one draw of 32 + n bytes: same layout."""
    a1 = bytes.fromhex(next(v for v in RFC8439 if v["name"] == "rfc8439-A.1-1")["ciphertext"])
    a1_block2 = bytes.fromhex(next(v for v in RFC8439 if v["name"] == "rfc8439-A.1-2")["ciphertext"])
    gen = ChaCha20Generator(b"", buffer_size=64)
    gen._key[:] = bytes(32)
    assert gen.read(96) == a1[32:] + a1_block2
    assert bytes(gen._key) == a1[:32]


def test_generator_refill_mixes_fresh_input_into_the_key_first():
    """With fresh input R, a refill is K = BLAKE2b-256(key=K, u8(len(L)) || L || R), L = "prngd pool refill",
    then the keystream under the new K (checked here with the stdlib's BLAKE2b, an independent implementation)."""
    fresh = bytes(range(32))
    label = b"prngd pool refill"
    mixed = hashlib.blake2b(bytes([len(label)]) + label + fresh, key=bytes(32), digest_size=32).digest()
    stream = bytearray(128)
    chacha20_xor_into(mixed, bytes(128), stream)
    for buffer_size, n in ((128, 96), (64, 96)):  # a refill, and a draw larger than the buffer
        gen = ChaCha20Generator(b"", buffer_size=buffer_size, fresh=lambda: fresh)
        gen._key[:] = bytes(32)
        assert gen.read(n) == bytes(stream[32:32 + n])
        assert bytes(gen._key) == bytes(stream[:32])


# --------------------------------------------------------------------------
# NIST CAVP HMAC_DRBG

NO_PR = _load("hmac-drbg-sha256-nist.json")
PR_256 = _load("hmac-drbg-sha256-pr-nist.json")


def _pr_id(prefix: str, i: int, case: dict) -> str:
    pers = "pers" if case["pers"] else "nopers"
    add = "add" if case["add"][0] else "noadd"
    return f"{prefix}-{i:03d}-{pers}-{add}"


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"sha256-nopr-{c['name']}") for c in NO_PR],
)
def test_cavp_hmac_drbg_sha256_no_pr(case):
    drbg = HmacDrbg(_h(case["entropy"]), _h(case["nonce"]), _h(case["pers"]), hash="sha256")
    drbg.generate(128, _h(case["add"][0]))
    assert drbg.generate(128, _h(case["add"][1])).hex() == case["expected"]


def _run_pr(case: dict, hash: str) -> str:
    drbg = HmacDrbg(_h(case["entropy"]), _h(case["nonce"]), _h(case["pers"]), hash=hash)
    n = len(case["expected"]) // 2
    drbg.generate(n, _h(case["add"][0]), entropy_pr=_h(case["entropy_pr"][0]))
    return drbg.generate(n, _h(case["add"][1]), entropy_pr=_h(case["entropy_pr"][1])).hex()


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=_pr_id("sha256-pr", i, c)) for i, c in enumerate(PR_256)],
)
def test_cavp_hmac_drbg_sha256_pr(case):
    assert _run_pr(case, "sha256") == case["expected"]


class ReferenceHmacDrbg:
    """SP 800-90A 10.1.2 written straight from the standard on the stdlib's hmac.

    An independent implementation to check the SHA-512 option against (the
    CAVP files above cover SHA-256).
    """

    def __init__(self, entropy, nonce, pers, name):
        self.name, self.size = name, hashlib.new(name).digest_size
        self.K, self.V = b"\x00" * self.size, b"\x01" * self.size
        self.update(entropy + nonce + pers)

    def update(self, data=b""):
        self.K = hmac.digest(self.K, self.V + b"\x00" + data, self.name)
        self.V = hmac.digest(self.K, self.V, self.name)
        if data:
            self.K = hmac.digest(self.K, self.V + b"\x01" + data, self.name)
            self.V = hmac.digest(self.K, self.V, self.name)

    def generate(self, n, add=b"", entropy_pr=None):
        if entropy_pr is not None:
            self.update(entropy_pr + add)
            add = b""
        elif add:
            self.update(add)
        out = b""
        while len(out) < n:
            self.V = hmac.digest(self.K, self.V, self.name)
            out += self.V
        self.update(add)
        return out[:n]


@settings(max_examples=60, deadline=None)
@given(entropy=st.binary(min_size=32, max_size=64), nonce=st.binary(min_size=16, max_size=32),
       pers=st.binary(max_size=32), adds=st.lists(st.binary(max_size=32), min_size=2, max_size=2),
       pr=st.booleans(), n=st.integers(1, 300))
def test_hmac_drbg_sha512_matches_a_reference_from_the_standard(entropy, nonce, pers, adds, pr, n):
    ours = HmacDrbg(entropy, nonce, pers, hash="sha512")
    ref = ReferenceHmacDrbg(entropy, nonce, pers, "sha512")
    for i, add in enumerate(adds):
        fresh = bytes([i]) * 32 if pr else None
        assert ours.generate(n, add, entropy_pr=fresh) == ref.generate(n, add, entropy_pr=fresh)


def test_the_reference_reproduces_the_sha256_cavp_cases():
    # The reference is itself checked: it must pass the NIST cases we have.
    for case in PR_256[:40]:
        ref = ReferenceHmacDrbg(_h(case["entropy"]), _h(case["nonce"]), _h(case["pers"]), "sha256")
        n = len(case["expected"]) // 2
        ref.generate(n, _h(case["add"][0]), entropy_pr=_h(case["entropy_pr"][0]))
        assert ref.generate(n, _h(case["add"][1]), entropy_pr=_h(case["entropy_pr"][1])).hex() == case["expected"]


def test_cavp_pr_by_hand_matches_entropy_pr_shortcut():
    """generate(entropy_pr=e) is exactly Reseed(e, add) then Generate without additional input."""
    case = next(c for c in PR_256 if c["pers"] and c["add"][0])
    drbg = HmacDrbg(_h(case["entropy"]), _h(case["nonce"]), _h(case["pers"]))
    n = len(case["expected"]) // 2
    for i in range(2):
        drbg.reseed(_h(case["entropy_pr"][i]), _h(case["add"][i]))
        out = drbg.generate(n)
    assert out.hex() == case["expected"]


def test_vector_counts():
    assert (len(RFC8439), len(NO_PR), len(PR_256)) == (10, 30, 240)
