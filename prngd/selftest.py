"""Start-up self-tests: known answers through the pool's own functions, before any socket accepts.

As FIPS 140-3 modules do at power-up: a broken cipher build (a wrong
pycryptodome wheel, a patched library) must stop the daemon, not serve wrong
output silently.  Three known-answer tests, each through the very function
the daemon uses:

- RFC 8439 section 2.4.2 (the "sunscreen" text, counter 1) through
  pool.chacha20_xor_into, which makes every keystream of the chacha20 generator;
- one NIST CAVP HMAC_DRBG SHA-256 case (no prediction resistance, with
  additional input) through pool.HmacDrbg;
- the first bytes of our own construction: a Pool whose os_random and clock
  are injected, fed fixed samples (KDF, accumulator framing, fast key erasure).

Together they take a few milliseconds at start (most of it loading the
library's C code), about one once loaded.  Imports nothing of prngd but the pool.
"""

from __future__ import annotations

import hashlib
import struct
import time

from prngd import pool

__all__ = ["SelfTestFailure", "run", "pinned_construction"]


class SelfTestFailure(Exception):
    """A known-answer test gave a wrong answer; the message names the test."""


# RFC 8439 section 2.4.2 (also tests/vectors/chacha20-rfc8439.json, "rfc8439-2.4.2-sunscreen").
_RFC8439_KEY = bytes(range(32))
_RFC8439_NONCE = bytes.fromhex("000000000000004a00000000")
_RFC8439_PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
                      b"for the future, sunscreen would be it.")
_RFC8439_CIPHERTEXT = bytes.fromhex(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d")

# NIST CAVP HMAC_DRBG.rsp [SHA-256], PredictionResistance = False, case "0 with
# additional data" (tests/vectors/hmac-drbg-sha256-nist.json): instantiate,
# generate 128 bytes with add[0], generate 128 bytes with add[1]; the second
# output is the answer.
_CAVP_ENTROPY = bytes.fromhex("d3cc4d1acf3dde0c4bd2290d262337042dc632948223d3a2eaab87da44295fbd")
_CAVP_NONCE = bytes.fromhex("0109b0e729f457328aa18569a9224921")
_CAVP_ADD = (bytes.fromhex("3c311848183c9a212a26f27f8c6647e40375e466a0857cc39c4e47575d53f1f6"),
             bytes.fromhex("fcb9abd19ccfbccef88c9c39bfb3dd7b1c12266c9808992e305bc3cff566e4e4"))
_CAVP_EXPECTED = bytes.fromhex(
    "9c7b758b212cd0fcecd5daa489821712e3cdea4467b560ef5ddc24ab47749a1f"
    "1ffdbbb118f4e62fcfca3371b8fbfc5b0646b83e06bfbbab5fac30ea09ea2bc7"
    "6f1ea568c9be0444b2cc90517b20ca825f2d0eccd88e7175538b85d90ab39018"
    "3ca6395535d34473af6b5a5b88f5a59ee7561573337ea819da0dcc3573a22974")

# The first 64 bytes of pinned_construction() below, with this version of
# pool.py.  It changes whenever the construction does (KDF, labels, framing,
# refill).  Re-pin: `python3 -c "from prngd import selftest;
# print(selftest.pinned_construction().hex())"` after checking the change is
# intended; tests/test_selftest.py recomputes it from a Pool independently of
# this module and compares with tests/test_pool.py's pin of the same run.
PINNED_CONSTRUCTION = bytes.fromhex(
    "cd7f7cd16ae73bee4aa9a1e4f2ea84046eb926e1eb97e668b89c04a4f5c83cf1"
    "b20d56ca333eb2a7ebe933979a2a59270a3433a049e8b0274be89bb6fd1cc3fd")


def _fixed_random(label: bytes = b"pinned"):
    """A deterministic os_random: SHAKE-256 of a label and a call counter (as tests' FakeRandom)."""
    calls = [0]

    def os_random(n: int) -> bytes:
        calls[0] += 1
        return hashlib.shake_256(label + struct.pack("<Q", calls[0])).digest(n)

    return os_random


def pinned_construction() -> bytes:
    """64 bytes from a chacha20 Pool with injected os_random and clocks, fed fixed samples."""
    p = pool.Pool(generator="chacha20", os_random=_fixed_random(), clock=lambda: 0.0, clocks=lambda: (0, 0, 0))
    p.add("pinned-a", b"0123456789abcdef" * 2, 128)
    p.add("pinned-b", bytes(range(48)), 200)
    p.add("pinned-c", b"uncredited", 0)
    p.reseed()
    return p.read(64)


def _rfc8439() -> bytes:
    out = bytearray(len(_RFC8439_PLAINTEXT))
    pool.chacha20_xor_into(_RFC8439_KEY, _RFC8439_PLAINTEXT, out, nonce=_RFC8439_NONCE, counter=1)
    return bytes(out)


def _cavp() -> bytes:
    drbg = pool.HmacDrbg(_CAVP_ENTROPY, _CAVP_NONCE, b"", hash="sha256")
    drbg.generate(128, _CAVP_ADD[0])
    return drbg.generate(128, _CAVP_ADD[1])


TESTS = (
    ("RFC 8439 ChaCha20 (section 2.4.2)", _rfc8439, _RFC8439_CIPHERTEXT),
    ("NIST CAVP HMAC_DRBG SHA-256", _cavp, _CAVP_EXPECTED),
    ("pinned output of prngd's ChaCha20 construction", pinned_construction, PINNED_CONSTRUCTION),
)


def run() -> float:
    """Run every known-answer test; return the seconds taken, or raise SelfTestFailure."""
    start = time.perf_counter()
    for name, test, expected in TESTS:
        try:
            answer = test()
        except Exception as e:  # a broken library may raise rather than answer wrong
            raise SelfTestFailure(f"self-test failed: {name}: {type(e).__name__}: {e}") from None
        if answer != expected:
            raise SelfTestFailure(f"self-test failed: {name}: wrong output")
    return time.perf_counter() - start
