# SPDX-License-Identifier: MIT
#
# The prngd entropy pool: an accumulator of samples and a generator of output.
#
# Accumulator. Samples (source, data, credited bits) are absorbed into a
# running BLAKE2b-512 hash. Each sample is framed as
#
#     u32le(len(source)) || source (UTF-8) || u64le(len(data)) || data
#
# so that sample boundaries cannot be shifted: two different sequences of
# samples never hash the same byte string. Hashing more input can only stir
# the state, so a sample (even a hostile one) never lowers the entropy already
# held. Credits are counted per source for stats, and since the last reseed
# to decide when to reseed.
#
# Generator "chacha20" (default): fast key erasure, as in the Linux CRNG and
# OpenBSD arc4random. The state is one 32-byte key K. A refill computes the
# ChaCha20 keystream under K (RFC 8439, nonce 0, counter 0) into a buffer of
# buffer_size bytes; its first 32 bytes become the new K and are zeroed in
# the buffer before any output leaves, and the rest is served. Each served
# byte is zeroed in the buffer as it leaves. A read larger than the buffer
# takes one fresh draw of 32 + n bytes under K, handled the same way. Every K
# is used for exactly one keystream, so the fixed nonce is never reused.
# Before every refill (and every large draw), 32 fresh bytes from the kernel
# are mixed into K (see Keying), whenever the kernel's generator is ready:
# two copies of one running pool (a VM snapshot restored twice, a container
# checkpoint) serve the same bytes for at most what is left of one buffer.
#
# Generator "hmac-drbg": SP 800-90A Rev. 1 HMAC_DRBG (section 10.1.2) over
# SHA-256 or SHA-512: reseed_interval 2^48, at most 2^19 bits per Generate
# request (longer reads are several requests), optional prediction
# resistance (every request first reseeds from os_random). Once buffer_size
# bytes have been generated since the last fresh input, the next Generate
# request gets 32 fresh bytes from the kernel as its additional input
# (SP 800-90A 10.1.2.5 step 2): the same bound on what two copies share.
#
# Keying. One KDF serves every change of the ChaCha20 key:
#   KDF(K, L, M) = BLAKE2b-256(key = K, msg = u8(len(L)) || L || M).
#   start:     chacha20:  K = KDF(0^32, "prngd pool init", os_random(32)).
#              hmac-drbg: Instantiate(os_random(32), nonce = os_random(16),
#                         personalization = "prngd pool hmac-drbg").
#   reseed:    the accumulator is finalised to a 64-byte digest D, and restarted;
#              chacha20:  K = KDF(K, "prngd pool reseed", D), buffer zeroed;
#              hmac-drbg: Reseed(entropy_input = D, additional = "prngd pool reseed").
#   fork:      in the child, with P = "prngd pool fork" || u64le(getpid()):
#              chacha20:  K = KDF(K, P, os_random(32)), buffer zeroed;
#              hmac-drbg: Reseed(entropy_input = os_random(32), additional = P).
#   refill:    with R = fresh_random(32) (getrandom, non-blocking; skipped
#              while the kernel is not ready):
#              chacha20:  K = KDF(K, "prngd pool refill", R), then the keystream;
#              hmac-drbg: Generate(n, additional_input = R), once per buffer_size bytes.
#   clocks:    a resume or a restore (below) reseeds at once, as a reseed
#              does, from D || R || i64le(monotonic, boottime - monotonic,
#              realtime - monotonic), with label "prngd pool resume";
#              a requested one (reseed_from_kernel: `prngd reseed`) from
#              D || R || i64le(monotonic, boottime, realtime), label
#              "prngd pool reseed request".
# Keyed BLAKE2b is a PRF under K (knowing D without K tells nothing of the
# new K) and a strong hash of D (knowing K without D means guessing D), so
# the new key is secret if either input is, and a reseed with enough fresh
# entropy locks out someone who had stolen the state.
#
# When. A reseed happens when the pool becomes seeded, when reseed_bits of
# newly credited entropy have arrived, when reseed_interval seconds have
# passed (checked in read; both only once seeded), in a child after fork()
# (os.register_at_fork), on demand, and when the clocks show that the
# machine was suspended or its memory restored: CLOCK_BOOTTIME gaining on
# CLOCK_MONOTONIC (a suspend), or CLOCK_REALTIME jumping against
# CLOCK_MONOTONIC (a snapshot restored, or the time set by hand). The clocks
# are compared at every refill and in check_clocks(), which the daemon calls
# every few seconds; nothing is added to read() itself.
#
# Guarantees:
#  - Backtracking resistance: once read() returns, the key that produced its
#    bytes is gone from the pool and the bytes it served are zeroed. (Bytes
#    still waiting in the buffer are future output, at most buffer_size - 32
#    of them; a reseed zeroes them.)
#  - Fork safety: a child mixes its pid and fresh os_random bytes into the
#    key, and drops the buffer, before fork() returns in it.
#  - Clone safety: copies of one pool's memory diverge from the next refill
#    on (fresh kernel input), and reseed at once on a detected resume.
#  - Never blocks. read() raises NotSeeded until seed_bits credited bits have
#    arrived, unless allow_unseeded=True (output then rests on os_random).
#  - With os_random, clock and clocks injected, everything is deterministic
#    (fresh_random defaults to an injected os_random).
#
# Entropy accounting (the estimate EGD command 0x00 reports) is an estimate
# only: raised by credits, capped at pool_bits, lowered by 8 bits per byte
# read, and never below floor_bits once seeded, so the pool never "runs dry".
# A read only counts its bytes; the estimate is brought up to date when it is
# asked for or changed (lowering by a sum and flooring once is the same as
# lowering and flooring read by read, while the floor stays put).
#
# Erasure in Python. Long-lived secrets (the key, the buffer, DRBG K and V)
# live in bytearrays overwritten in place; the code says where. Temporary
# bytes made along the way (digests, pycryptodome's HMAC key pads, the C
# state inside cipher and hash objects) are immutable or out of reach: no
# reference to them is kept, so CPython frees them at once, but freed memory
# is not scrubbed.
#
# Not thread-safe: use one Pool per thread, or a lock around it.

from __future__ import annotations

import hashlib
import math
import os
import struct
import time
import weakref

from Crypto.Cipher import ChaCha20
from Crypto.Hash import BLAKE2b, HMAC, SHA256, SHA512

__all__ = [
    "NotSeeded",
    "ReseedRequired",
    "Pool",
    "PoolProxy",
    "HmacDrbg",
    "ChaCha20Generator",
    "Accumulator",
    "chacha20_xor_into",
]

KEY_SIZE = 32
CHACHA20_NONCE = bytes(12)

# Zeros for the served bytes of a read of up to 255 (every EGD read), without a slice per read.
_ZEROS = tuple(bytes(n) for n in range(256))

_LABEL_INIT = b"prngd pool init"
_LABEL_RESEED = b"prngd pool reseed"
_LABEL_FORK = b"prngd pool fork"
_LABEL_COUNTER = b"prngd pool reseed counter"
_LABEL_REFILL = b"prngd pool refill"
_LABEL_RESUME = b"prngd pool resume"
_LABEL_REQUEST = b"prngd pool reseed request"
_DRBG_PERSONALIZATION = b"prngd pool hmac-drbg"
_ACCUMULATOR_LABEL = b"prngd pool accumulator v1"

# Security strength 256 bits: 32 bytes of entropy input, 16 of nonce.
_ENTROPY_BYTES = 32
_NONCE_BYTES = 16


class NotSeeded(Exception):
    """read() before the pool has been credited with seed_bits of entropy."""


class ReseedRequired(Exception):
    """The HMAC_DRBG reseed counter passed reseed_interval (SP 800-90A 10.1.2.5 step 1)."""


def chacha20_xor_into(key, src, dst, *, nonce=CHACHA20_NONCE, counter=0) -> None:
    """Write ChaCha20(key, nonce, counter) XOR src into dst (same length).

    With src all zeros this is the raw keystream. The generator makes every
    keystream through this one function, so the RFC 8439 tests exercise the
    very calls it uses. The cipher object (and the copy of the key in its C
    state) is dropped on return.
    """
    cipher = ChaCha20.new(key=key, nonce=nonce)
    if counter:
        cipher.seek(64 * counter)
    cipher.encrypt(src, output=dst)


def _kdf_into(key: bytearray, label: bytes, material) -> None:
    """Replace key, in place, by BLAKE2b-256(key=key, u8(len(label)) || label || material)."""
    # The standard library's BLAKE2b (RFC 7693, the same function as
    # Crypto.Hash.BLAKE2b; the tests rebuild its outputs with the latter):
    # every refill runs this, and a keyed pycryptodome hash costs about 7 us
    # to create, 10% of a 64 KiB read, against 0.7 us here.
    h = hashlib.blake2b(bytes((len(label),)), digest_size=KEY_SIZE, key=key)
    h.update(label)
    h.update(material)
    key[:] = h.digest()  # the old key is overwritten here


def _clamp_credit(bits, nbytes: int) -> float:
    """Credit at most 8 bits per byte of data and never less than 0 (NaN counts as 0)."""
    credit = float(bits)
    if not credit > 0.0:
        return 0.0
    return min(credit, 8.0 * nbytes)


def kernel_random(n: int) -> bytes | None:
    """n bytes from getrandom(2) without blocking; None while the kernel's generator is not ready."""
    try:
        return os.getrandom(n, os.GRND_NONBLOCK)
    except (BlockingIOError, OSError):
        return None


def read_clocks(_get=time.clock_gettime_ns, _mono=time.CLOCK_MONOTONIC, _boot=time.CLOCK_BOOTTIME,
                _real=time.CLOCK_REALTIME) -> tuple[int, int, int]:
    """(CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME) in nanoseconds."""
    return _get(_mono), _get(_boot), _get(_real)


# A suspend shorter than this, or a wall-clock step smaller, is not worth a
# reseed. NTP slews the wall clock by at most 500 ppm, so the allowance grows
# by 1 ms per second between two checks.
CLOCK_JUMP_NS = 1_000_000_000
_SLEW_DIVISOR = 1000


# --------------------------------------------------------------------------
# Accumulator


class Accumulator:
    """Running BLAKE2b-512 hash of framed samples, with credit bookkeeping."""

    __slots__ = ("_hash", "pending_bits", "credited_total", "credited_by_source", "samples_by_source")

    def __init__(self) -> None:
        self.credited_total = 0.0
        self.credited_by_source: dict[str, float] = {}
        self.samples_by_source: dict[str, int] = {}
        self._restart()

    def _restart(self) -> None:
        # Dropping the old hash object frees its state; what it held now
        # lives on only in the key it was extracted into.
        self._hash = BLAKE2b.new(digest_bits=512)
        self._hash.update(_ACCUMULATOR_LABEL)
        self.pending_bits = 0.0

    def add(self, source: str, data, bits) -> float:
        """Absorb one sample; return the credit actually granted."""
        if not isinstance(source, str):
            raise TypeError("source must be a str")
        name = source.encode("utf-8", "surrogatepass")
        data = memoryview(data).cast("B")
        credit = _clamp_credit(bits, data.nbytes)
        # Length-prefix both fields so no sample can pose as two, or as part of another.
        self._hash.update(struct.pack("<I", len(name)) + name + struct.pack("<Q", data.nbytes))
        self._hash.update(data)
        self.pending_bits += credit
        self.credited_total += credit
        self.credited_by_source[source] = self.credited_by_source.get(source, 0.0) + credit
        self.samples_by_source[source] = self.samples_by_source.get(source, 0) + 1
        return credit

    def extract(self) -> bytes:
        """Finalise to a 64-byte digest and start again empty."""
        digest = self._hash.digest()
        self._restart()
        return digest


# --------------------------------------------------------------------------
# Generator "chacha20": fast key erasure


class ChaCha20Generator:
    """Fast-key-erasure ChaCha20 generator with a keystream buffer."""

    name = "chacha20"
    __slots__ = ("_key", "_buf", "_view", "_zeros", "_size", "_pos", "_fresh", "_direct")

    def __init__(self, seed, buffer_size: int = 16384, fresh=None) -> None:
        if buffer_size < 2 * KEY_SIZE:
            raise ValueError("buffer_size must be at least 64")
        # fresh(): 32 new bytes to mix into K before each keystream, or None (none now).
        self._fresh = fresh
        self._size = buffer_size
        self._key = bytearray(KEY_SIZE)
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        # Source of zeros: the keystream input, and what served bytes are overwritten with.
        self._zeros = memoryview(bytes(buffer_size))
        self._pos = buffer_size  # empty: the first read refills
        self._direct = False  # the next read is one fresh draw (refresh)
        self.reseed(seed, _LABEL_INIT)

    def reseed(self, entropy, label: bytes) -> None:
        """K = KDF(K, label, entropy); zero whatever is left unserved."""
        _kdf_into(self._key, label, entropy)
        self._discard()

    def _discard(self) -> None:
        # Bytes before _pos were zeroed as they were served.
        pos = self._pos
        self._view[pos:] = self._zeros[pos:]
        self._pos = self._size

    def refresh(self) -> None:
        """The next read: fresh input mixed into K first, and nothing of the buffer (which is zeroed)."""
        self._discard()
        self._direct = True  # one draw of 32 + n bytes rather than a whole buffer for one read

    def _mix_fresh(self) -> None:
        if self._fresh is not None:
            fresh = self._fresh()
            if fresh:
                _kdf_into(self._key, _LABEL_REFILL, fresh)

    def _refill(self) -> None:
        """Fill the buffer under K (fresh input mixed in first); its first 32 bytes become the next K."""
        self._mix_fresh()
        view = self._view
        # Overwrites every byte, unserved leftovers included.
        chacha20_xor_into(self._key, self._zeros, view)
        self._key[:] = view[:KEY_SIZE]  # the old key is gone before any output leaves
        view[:KEY_SIZE] = self._zeros[:KEY_SIZE]
        self._pos = KEY_SIZE

    def read(self, n: int) -> bytes:
        # Hot path: slice out, zero what left, move on.
        pos = self._pos
        end = pos + n
        if pos <= end <= self._size:
            served = self._view[pos:end]
            out = served.tobytes()
            served[:] = _ZEROS[n] if n < 256 else self._zeros[:n]  # served bytes are erased as they leave
            self._pos = end
            return out
        return self._read_slow(n)

    def _read_slow(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        if n > self._size - KEY_SIZE or self._direct:
            self._direct = False
            return self._read_direct(n)
        self._refill()
        return self.read(n)

    def _read_direct(self, n: int) -> bytes:
        """One draw of 32 + n bytes under K: 32 for the next K, n to return."""
        self._mix_fresh()
        draw = bytearray(KEY_SIZE + n)
        view = memoryview(draw)
        chacha20_xor_into(self._key, view, view)  # in place: zeros in, keystream out
        self._key[:] = view[:KEY_SIZE]  # the old key is gone before any output leaves
        out = view[KEY_SIZE:].tobytes()
        view[:] = bytes(len(draw))  # leave no copy of the new key or the output behind
        view.release()
        return out


# --------------------------------------------------------------------------
# Generator "hmac-drbg": SP 800-90A HMAC_DRBG

_DRBG_HASHES = {"sha256": SHA256, "sha512": SHA512}


class HmacDrbg:
    """SP 800-90A Rev. 1 HMAC_DRBG (10.1.2): Instantiate, Reseed, Generate.

    Security strength 256 bits for both hashes: entropy input of at least 32
    bytes, nonce of at least 16. Working state K and V lives in bytearrays
    overwritten in place.
    """

    RESEED_INTERVAL = 1 << 48
    MAX_REQUEST_BYTES = (1 << 19) // 8

    __slots__ = ("_hashmod", "_K", "_V", "reseed_counter", "hash_name")

    def __init__(self, entropy, nonce, pers=b"", hash: str = "sha256") -> None:
        try:
            self._hashmod = _DRBG_HASHES[hash]
        except KeyError:
            raise ValueError(f"unknown hash {hash!r}; expected one of {sorted(_DRBG_HASHES)}") from None
        if len(entropy) < _ENTROPY_BYTES:
            raise ValueError("entropy input must be at least 32 bytes")
        if len(nonce) < _NONCE_BYTES:
            raise ValueError("nonce must be at least 16 bytes")
        self.hash_name = hash
        outlen = self._hashmod.digest_size
        # 10.1.2.3: Key = 0x00 00...00, V = 0x01 01...01, then Update(seed_material).
        self._K = bytearray(outlen)
        self._V = bytearray(b"\x01" * outlen)
        self._update(entropy, nonce, pers or b"")
        self.reseed_counter = 1

    def _hmac(self, *parts) -> bytes:
        h = HMAC.new(self._K, digestmod=self._hashmod)
        for part in parts:
            h.update(part)
        return h.digest()

    def _update(self, *provided) -> None:
        """10.1.2.2 HMAC_DRBG_Update; provided_data is the concatenation of the parts.

        K and V are overwritten in place, so the previous state is gone on return.
        """
        self._K[:] = self._hmac(self._V, b"\x00", *provided)
        self._V[:] = self._hmac(self._V)
        if not any(len(p) for p in provided):
            return
        self._K[:] = self._hmac(self._V, b"\x01", *provided)
        self._V[:] = self._hmac(self._V)

    def reseed(self, entropy, additional=b"") -> None:
        """10.1.2.4: Update(entropy_input || additional_input); counter back to 1."""
        if len(entropy) < _ENTROPY_BYTES:
            raise ValueError("entropy input must be at least 32 bytes")
        self._update(entropy, additional or b"")
        self.reseed_counter = 1

    def generate(self, n: int, additional=b"", *, entropy_pr=None) -> bytes:
        """10.1.2.5 Generate n bytes (at most 2^19 bits).

        With entropy_pr (prediction resistance, 9.3.1 steps 7-8), first
        Reseed(entropy_pr, additional) and then generate with no additional input.
        """
        if not 0 <= n <= self.MAX_REQUEST_BYTES:
            raise ValueError(f"n must be between 0 and {self.MAX_REQUEST_BYTES}")
        additional = additional or b""
        if entropy_pr is not None:
            self.reseed(entropy_pr, additional)
            additional = b""
        elif self.reseed_counter > self.RESEED_INTERVAL:
            raise ReseedRequired()
        if additional:
            self._update(additional)
        outlen = len(self._V)
        temp = bytearray(-(-n // outlen) * outlen)
        view = memoryview(temp)
        V = self._V
        for i in range(0, len(temp), outlen):
            V[:] = self._hmac(V)
            view[i : i + outlen] = V
        out = view[:n].tobytes()
        view[:] = bytes(len(temp))  # the tail past n is the current V
        view.release()
        self._update(additional)  # backtracking resistance: K and V move on
        self.reseed_counter += 1
        return out


class _DrbgGenerator:
    """Adapts HmacDrbg to the pool: long reads, prediction resistance, reseeds."""

    name = "hmac-drbg"
    __slots__ = ("_drbg", "_pr", "_os_random", "_fresh", "_budget", "_left")

    def __init__(self, os_random, hash: str, prediction_resistance: bool, fresh=None, budget: int = 16384) -> None:
        self._os_random = os_random
        self._pr = prediction_resistance
        self._drbg = HmacDrbg(os_random(_ENTROPY_BYTES), os_random(_NONCE_BYTES), _DRBG_PERSONALIZATION, hash)
        # fresh() as for chacha20, given as additional input once `budget` bytes have left.
        self._fresh = fresh
        self._budget = budget
        self._left = 0  # the first request gets fresh input

    def reseed(self, entropy, label: bytes) -> None:
        self._drbg.reseed(entropy, label)

    def refresh(self) -> None:
        self._left = 0  # the next request gets fresh additional input (with prediction_resistance, all do)

    def read(self, n: int) -> bytes:
        if n <= 0:
            if n < 0:
                raise ValueError("n must be >= 0")
            return b""
        step = HmacDrbg.MAX_REQUEST_BYTES
        if n <= step:
            return self._request(n)
        return b"".join(self._request(min(step, n - i)) for i in range(0, n, step))

    def _request(self, n: int) -> bytes:
        drbg = self._drbg
        if self._pr:
            return drbg.generate(n, entropy_pr=self._os_random(_ENTROPY_BYTES))
        additional = b""
        self._left -= n
        if self._left < 0 and self._fresh is not None:
            additional = self._fresh() or b""  # nothing while the kernel is not ready: tried again next time
            if additional:
                self._left = self._budget - n  # this request's bytes come after it
        try:
            return drbg.generate(n, additional)
        except ReseedRequired:  # after 2^48 requests without a reseed: never in practice
            drbg.reseed(self._os_random(_ENTROPY_BYTES), _LABEL_COUNTER)
            return drbg.generate(n, additional)


# --------------------------------------------------------------------------
# The pool

_GENERATORS = ("chacha20", "hmac-drbg")

# Live pools, so that a child after fork() can reseed every one of them.
_LIVE_POOLS: "weakref.WeakSet[Pool]" = weakref.WeakSet()


class Pool:
    """Entropy pool: accumulator + generator + entropy accounting. See the top of this file.

    generator: "chacha20" (fast key erasure) or "hmac-drbg" (SP 800-90A), the
    latter over drbg_hash "sha256" or "sha512", optionally with
    prediction_resistance. pool_bits caps the entropy estimate and floor_bits
    bounds it from below once seeded; seed_bits of credited entropy make the
    pool seeded (0: seeded at once, on os_random alone); reseed_bits of new
    credit or reseed_interval seconds trigger a reseed. buffer_size is the
    chacha20 keystream buffer. os_random(n) and clock() are injectable, and so
    are fresh_random(n) (the kernel's randomness mixed in at each refill, or
    None while it is not ready; by default getrandom non-blocking, or
    os_random when that is injected) and clocks() (monotonic, boottime,
    realtime in ns, to detect a resume or a restore).
    """

    __slots__ = (
        "_acc",
        "_gen",
        "_gen_read",
        "_os_random",
        "_clock",
        "_cap",
        "_floor_bits",
        "_floor",
        "_entropy",
        "_settled_at",
        "_seed_bits",
        "_reseed_bits",
        "_interval",
        "_seeded",
        "on_seeded",
        "_next_reseed_at",
        "_last_reseed",
        "_reseeds",
        "_bytes_out",
        "_fresh_random",
        "_clocks",
        "_clock_base",
        "_clock_events",
        "_clock_reseeds",
        "_generation",
        "_generation_name",
        "_generation_seen",
        "_refreshes",
        "__weakref__",
    )

    def __init__(
        self,
        *,
        generator: str = "chacha20",
        drbg_hash: str = "sha256",
        prediction_resistance: bool = False,
        pool_bits: int = 4096,
        reseed_bits: int = 256,
        reseed_interval: float = 60.0,
        seed_bits: int = 256,
        floor_bits: int = 256,
        buffer_size: int = 16384,
        os_random=os.urandom,
        clock=time.monotonic,
        fresh_random=None,
        clocks=read_clocks,
    ) -> None:
        if generator not in _GENERATORS:
            raise ValueError(f"unknown generator {generator!r}; expected one of {_GENERATORS}")
        if drbg_hash not in _DRBG_HASHES:
            raise ValueError(f"unknown drbg_hash {drbg_hash!r}; expected one of {sorted(_DRBG_HASHES)}")
        if prediction_resistance and generator != "hmac-drbg":
            raise ValueError("prediction_resistance applies to the hmac-drbg generator only")
        if min(pool_bits, reseed_bits, seed_bits, floor_bits) < 0:
            raise ValueError("bit counts must be >= 0")
        if floor_bits > pool_bits:
            raise ValueError("floor_bits must not exceed pool_bits")
        if not reseed_interval > 0:
            raise ValueError("reseed_interval must be > 0")

        self._os_random = os_random
        self._clock = clock
        if fresh_random is None:
            fresh_random = kernel_random if os_random is os.urandom else os_random
        self._fresh_random = fresh_random
        self._clocks = clocks
        self._clock_base = self._clock_offsets()
        self._clock_events: list[str] = []
        self._clock_reseeds = 0
        self._generation = None  # see watch_generation
        self._generation_name = None
        self._generation_seen = None
        self._refreshes = 0
        self._cap = float(pool_bits)
        self._floor_bits = float(floor_bits)
        self._floor = 0.0  # floor_bits once seeded
        self._entropy = 0.0  # the estimate when _bytes_out was _settled_at
        self._settled_at = 0
        self._seed_bits = seed_bits
        self._reseed_bits = reseed_bits
        self._interval = float(reseed_interval)
        self._seeded = False
        self.on_seeded = None  # called once, when the pool first becomes seeded
        self._next_reseed_at = math.inf  # no timed reseeds before seeded
        self._reseeds = 0
        self._bytes_out = 0
        self._acc = Accumulator()
        # Initial key material is uncredited: it lets allow_unseeded reads be
        # unpredictable, but seeded waits for credited samples.
        if generator == "chacha20":
            self._gen = ChaCha20Generator(os_random(_ENTROPY_BYTES), buffer_size, self._refill_input)
        else:
            self._gen = _DrbgGenerator(os_random, drbg_hash, prediction_resistance, self._refill_input,
                                       buffer_size)
        self._gen_read = self._gen.read
        self._last_reseed = clock()
        _LIVE_POOLS.add(self)
        if seed_bits == 0:
            self._become_seeded()

    # -- input ------------------------------------------------------------

    def add(self, source: str, data, bits: float = 0) -> None:
        """Mix a sample in; credit clamp(bits, 0, 8*len(data)). May reseed."""
        credit = self._acc.add(source, data, bits)
        if credit:
            self._entropy = min(self._cap, self._settle() + credit)
        if not self._seeded:
            if self._acc.credited_total >= self._seed_bits:
                self._become_seeded()
        elif self._acc.pending_bits >= self._reseed_bits:
            self._reseed()

    def _become_seeded(self) -> None:
        # Reseed at once so that the key includes the material that made us seeded.
        self._seeded = True
        entropy = self._settle()  # the reads so far, under the old floor
        self._floor = self._floor_bits
        self._entropy = max(entropy, self._floor)
        self._reseed()
        if self.on_seeded is not None:
            self.on_seeded()

    # -- output -----------------------------------------------------------

    def read(self, n: int, *, allow_unseeded: bool = False) -> bytes:
        """Exactly n bytes; never blocks. NotSeeded before seeded unless allow_unseeded."""
        if not (self._seeded or allow_unseeded):
            raise NotSeeded("the pool has not yet been credited with enough entropy")
        if self._clock() >= self._next_reseed_at:
            self._reseed()
        out = self._gen_read(n)
        self._bytes_out += n  # the estimate follows in _settle()
        return out

    def _settle(self) -> float:
        """The estimate now: lowered by 8 bits per byte read since the last settling, floored."""
        entropy = self._entropy - 8 * (self._bytes_out - self._settled_at)
        self._entropy = entropy = entropy if entropy > self._floor else self._floor
        self._settled_at = self._bytes_out
        return entropy

    # -- reseeding --------------------------------------------------------

    def reseed(self) -> None:
        """Reseed now from the accumulator (SIGHUP, tests)."""
        self._reseed()

    def _reseed(self) -> None:
        self._gen.reseed(self._acc.extract(), _LABEL_RESEED)
        self._reseeds += 1
        now = self._clock()
        self._last_reseed = now
        if self._seeded:
            self._next_reseed_at = now + self._interval

    # -- copies: fresh input at refills, clock checks ----------------------

    def _refill_input(self) -> bytes | None:
        """Called by the generator before each buffer's worth: check the clocks, then fresh bytes."""
        self._clocks_moved()
        return self._fresh_random(_ENTROPY_BYTES)

    def _clock_offsets(self) -> tuple[int, int, int]:
        mono, boot, real = self._clocks()
        return mono, boot - mono, real - mono

    def _clocks_moved(self) -> str | None:
        """Compare the clocks (and the VM generation, if watched) with the last check; on a resume
        or a restore, reseed now and say why."""
        mono, boot, real = self._clocks()
        last_mono, last_boot_off, last_real_off = self._clock_base
        boot_off, real_off = boot - mono, real - mono
        self._clock_base = (mono, boot_off, real_off)
        allowance = CLOCK_JUMP_NS + (mono - last_mono) // _SLEW_DIVISOR
        suspended = boot_off - last_boot_off
        stepped = real_off - last_real_off
        restored = self._generation_changed() if self._generation is not None else None
        if suspended < allowance and -allowance < stepped < allowance:
            if restored is None:
                return None  # the usual case: one comparison per refill
            reasons = []
        elif suspended >= allowance:
            reasons = [f"resumed after {suspended / 1e9:.1f} s suspended "
                       f"(CLOCK_BOOTTIME gained on CLOCK_MONOTONIC)"]
        else:
            reasons = [f"the wall clock jumped {stepped / 1e9:+.1f} s against CLOCK_MONOTONIC "
                       f"(a snapshot restore, or the time was set)"]
        if restored is not None:
            reasons.insert(0, restored)
        reason = "; ".join(reasons)  # one restore, one reseed, one line, whatever saw it
        context = struct.pack("<qqqQ", *self._clock_base, (self._generation_seen or 0) & 0xFFFFFFFFFFFFFFFF)
        self._reseed_fresh(_LABEL_RESUME, context)
        self._clock_reseeds += 1
        del self._clock_events[:-7]  # a pool nobody asks keeps only the latest few
        self._clock_events.append(reason)
        return reason

    def watch_generation(self, name: str, read) -> None:
        """Also compare read() (a VM generation counter; None: no consistent value now) at every
        clock check: a change reseeds, as a restore seen on the clocks does."""
        self._generation = read
        self._generation_name = name
        self._generation_seen = read()

    def _generation_changed(self) -> str | None:
        now = self._generation()
        seen = self._generation_seen
        if now is None or now == seen:
            return None
        self._generation_seen = now
        if seen is None:
            return None  # the first consistent read: nothing to compare it with
        return f"{self._generation_name}: VM generation counter changed {seen} -> {now} (restored from a snapshot)"

    def detectors(self) -> list[str]:
        """What the pool watches for a resume or a restore."""
        found = ["boottime-gap", "realtime-jump"]
        if self._generation is not None:
            found.append(self._generation_name)
        return found

    def _reseed_fresh(self, label: bytes, context: bytes) -> None:
        # The accumulator alone would not do: two copies hold the same one.
        fresh = self._fresh_random(_ENTROPY_BYTES) or b""
        self._gen.reseed(self._acc.extract() + fresh + context, label)
        self._reseeds += 1
        now = self._clock()
        self._last_reseed = now
        if self._seeded:
            self._next_reseed_at = now + self._interval

    def refresh(self) -> None:
        """Prediction resistance for the next read (a `,pr` socket): it comes from a key into which
        32 fresh bytes of the kernel's (getrandom) have just been mixed, and the keystream buffered
        before is discarded.  While the kernel's generator is not ready there is nothing fresh to mix."""
        self._gen.refresh()
        self._refreshes += 1

    def reseed_from_kernel(self) -> None:
        """Reseed now with fresh kernel randomness, as a detected restore does: for a restore
        that only something outside can tell (`prngd reseed` from a snapshot tool)."""
        self._reseed_fresh(_LABEL_REQUEST, struct.pack("<qqq", *self._clocks()))

    def check_clocks(self) -> list[str]:
        """Check the clocks now (reseeding on a resume or a restore); every such event
        since the last call, including those found at a refill, one reason each."""
        self._clocks_moved()
        events, self._clock_events = self._clock_events, []
        return events

    def _reseed_after_fork(self) -> None:
        """In a fork child: mix pid and fresh OS randomness into the key, drop the buffer."""
        label = _LABEL_FORK + struct.pack("<Q", os.getpid())
        try:
            fresh = self._os_random(_ENTROPY_BYTES)
        except Exception:
            # Still differ from the parent (the pid is in the label), and
            # from an earlier child that had the same pid (the clocks).
            fresh = struct.pack("<QQ", time.time_ns(), time.perf_counter_ns()) * 2
        self._gen.reseed(fresh, label)
        self._reseeds += 1

    # -- reporting --------------------------------------------------------

    @property
    def entropy_bits(self) -> int:
        return int(self._settle())

    @property
    def seeded(self) -> bool:
        return self._seeded

    @property
    def generator_name(self) -> str:
        return self._gen.name

    def stats(self) -> dict:
        """JSON-serialisable counters. Credits are floats; last_reseed_age_s counts
        from the last reseed, or from construction if there has been none."""
        acc = self._acc
        return {
            "generator": self._gen.name,
            "seeded": self._seeded,
            "entropy_bits": int(self._settle()),
            "reseeds": self._reseeds,
            "bytes_out": self._bytes_out,
            "credited_bits_total": acc.credited_total,
            "credited_bits_by_source": dict(acc.credited_by_source),
            "samples_by_source": dict(acc.samples_by_source),
            "last_reseed_age_s": max(0.0, self._clock() - self._last_reseed),
            "clock_reseeds": self._clock_reseeds,
            "detectors": self.detectors(),
            "pr_reseeds": self._refreshes,
        }


class PoolProxy:
    """What a worker thread may touch of a pool.

    The pool is not thread-safe and lives in the trio thread.  Blocking file
    work (seed saves, the exchange file) runs in worker threads, so it gets
    bytes drawn beforehand and its additions are applied when it returns.
    """

    def __init__(self, pool: Pool, prefetch: int) -> None:
        self.seeded = pool.seeded
        self.entropy_bits = pool.entropy_bits
        self._data = bytearray(pool.read(prefetch, allow_unseeded=True))
        self._adds: list[tuple[str, bytes, float]] = []

    def read(self, n: int, *, allow_unseeded: bool = False) -> bytes:
        if n > len(self._data):
            raise RuntimeError(f"PoolProxy holds {len(self._data)} bytes, {n} asked")
        out = bytes(self._data[:n])
        self._data[:n] = bytes(n)  # served bytes are not kept
        del self._data[:n]
        return out

    def add(self, source: str, data: bytes, bits: float = 0) -> None:
        self._adds.append((source, bytes(data), bits))

    def apply(self, pool: Pool) -> None:
        for source, data, bits in self._adds:
            pool.add(source, data, bits)
        self._adds.clear()
        self._data[:] = bytes(len(self._data))


def _reseed_pools_after_fork() -> None:
    for pool in list(_LIVE_POOLS):
        pool._reseed_after_fork()


os.register_at_fork(after_in_child=_reseed_pools_after_fork)
