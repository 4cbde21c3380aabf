"""The seed file: randomness carried from one run to the next, never used twice,
credited only on the machine that wrote it.

The rules, after seedrng (busybox) and systemd-random-seed:

* At start, before any byte is served, the old seed is read (a regular file,
  opened with O_NOFOLLOW, at most 4 KiB) and mixed into the pool together with
  the pid, the time and a fresh nonce, so two starts from copies of one seed
  diverge even with no other input.
* Only what prngd can show it wrote is ever replaced (ownfile.py): nothing, an
  empty file, a prngd seed file (any version), or a seed file of the original
  PRNGD where PRNGD leaves one: 4096 bytes of generator output, no header,
  named prngd-seed (PRNGD's compiled-in name) or of mode 0600 (what PRNGD
  sets at every start), owned by root or prngd's user.  Anything else (a
  4096-byte key of mode 0400 or 0644 or another user's, a text file, a FIFO,
  a device, a directory, a file over 4 KiB, a symbolic link, a file with more
  than one hard link, a file we cannot read) raises ForeignFile before
  anything is written, and the daemon refuses to start: a mistyped -s must
  cost nothing.  Each save checks the same again before renaming over the path.
* At once it is replaced by fresh pool output.  Only when that replacement is
  on disk is the old seed credited: a seed is never credited twice, and a
  crash before the rename leaves an old seed that nothing has been served from.
* Every write is atomic: a temporary file in the same directory (O_EXCL,
  0600), fsync, rename over the seed, fsync the directory.  A crash at any
  moment leaves either the old or the new file whole.
* A seed is credited (at most 256 bits) only if a seeded prngd wrote it (the
  header's credit flag, as seedrng keeps seed.credit apart from
  seed.no-credit), on this machine (the header's machine fingerprint, see
  identity.py, equals ours), and nobody else could have read or written it: a
  regular file owned by our euid with no group or other permission bits.
  Anything else identified is mixed uncredited, and the status and one log
  line say why.  A seed from another machine (a clone, a copied image), from
  an older prngd or from PRNGD is thus mixed once and never credited; its
  replacement carries our fingerprint and is credited at the next start.
* A symbolic link, or anything else prngd did not write, put in place of the
  seed while we run is left alone: each save fails, logged, until it is gone.
* A failing save (read-only directory, full disk, I/O error) is logged once
  and retried at the next interval; it never raises into the server.

File format (integers big-endian), 588 bytes as prngd writes it:

    offset size  field
    0      8     magic b"PRNGSEED"
    8      1     version, 2
    9      1     flags: bit 0 CREDIT (the pool was seeded when this was
                 written), bit 1 BOUND (the fingerprint field is the
                 writer's machine fingerprint); the other bits are 0
    10     2     payload length N, 1..4020
    12     32    machine fingerprint (zeros unless BOUND)
    44     32    BLAKE2b-256 of bytes 0..43 followed by the payload
    76     N     payload: pool output (512 bytes)

Version 1 (written before machine fingerprints) had no fingerprint field: its
checksum followed the length at offset 12 and the payload began at 44.  It is
still read, and never credited.  The checksum makes a torn, truncated or
corrupted file visible; such a file is still mixed, uncredited.
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import re
import stat
import struct
import time
import zlib

from Crypto.Hash import BLAKE2b

from prngd import ownfile
from prngd.value import Value

log = logging.getLogger("prngd.seedfile")

MAGIC = b"PRNGSEED"
VERSION = 2
FLAG_CREDIT = 0x01
FLAG_BOUND = 0x02
_HEAD = struct.Struct(">8sBBH")
FINGERPRINT_SIZE = 32
CHECKSUM_SIZE = 32
HEADER_SIZE = _HEAD.size + FINGERPRINT_SIZE + CHECKSUM_SIZE  # 76
V1_HEADER_SIZE = _HEAD.size + CHECKSUM_SIZE  # 44
MAX_FILE_SIZE = 4096  # we never read more than this of a seed file
PRNGD_SEED_SIZE = 4096  # what the original PRNGD writes: its generator's output, nothing else
PRNGD_SEED_NAME = "prngd-seed"  # PRNGD's compiled-in RANDSAVENAME, in whichever directory a build put it
PRNGD_SEED_MODE = 0o600  # PRNGD chmods its seed file to this at every start
MAX_PAYLOAD = MAX_FILE_SIZE - HEADER_SIZE
SEED_BYTES = 512  # pool output per seed file (seedrng writes 32..512)
MAX_CREDIT_BITS = 256  # whatever the seed's size
DIR_MODE = 0o700
FILE_MODE = 0o600


class SeedFormatError(ValueError):
    """The bytes are not a whole, valid prngd seed file; the message says why."""


class ForeignFile(Exception):
    """Something prngd did not write is at the seed path; it was left as it was.

    Raised by load_and_replace before anything is written; the message is one
    line for the user, naming the path and what is there.  `what` is that
    last part alone ("it is a FIFO, not a seed file").
    """

    def __init__(self, message: str, what: str):
        super().__init__(message)
        self.what = what


# Where the old seed came from, for the status (SeedState.origin).
ORIGIN_THIS_MACHINE = "this machine"
ORIGIN_OTHER_MACHINE = "another machine"
ORIGIN_UNBOUND = "no machine fingerprint"  # a prngd seed written where nothing identified the machine
ORIGIN_OLD_PRNGD = "older prngd"  # format version 1
ORIGIN_PRNGD = "PRNGD"  # the original C daemon
ORIGIN_UNKNOWN = "unknown"  # our magic, but damaged or of an unknown version


class Seed(Value):
    """A parsed seed file; immutable, and equal to another with the same fields."""

    __slots__ = ("payload", "credit", "version", "fingerprint")

    def __init__(self, payload: bytes, credit: bool, version: int = VERSION, fingerprint: bytes | None = None):
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "credit", credit)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "fingerprint", fingerprint)  # the writer's machine fingerprint (None: unbound)


class SeedState:
    """What the status command reports about the seed file."""

    __slots__ = ("path", "loaded", "loaded_bytes", "credited_bits", "note", "origin", "last_save",
                 "last_save_credit", "saves", "failures", "last_error", "fingerprint")

    def __init__(self, path: str, *, fingerprint: bytes | None = None, origin: str | None = None) -> None:
        self.path = path
        self.loaded = False  # an old seed was read and mixed at start
        self.loaded_bytes = 0
        self.credited_bits = 0  # credited from the old seed at start
        self.note: str | None = None  # why the old seed was not credited (or not read)
        self.origin = origin  # who wrote the old seed (ORIGIN_*), None when there was none
        self.last_save: float | None = None  # time.time() of the last good save
        self.last_save_credit: bool | None = None  # the credit flag that save wrote
        self.saves = 0  # good saves, counting the replacement at start
        self.failures = 0
        self.last_error: str | None = None  # of the last save, None once a save succeeds
        self.fingerprint = fingerprint  # this machine's, written into every save; not reported

    def as_dict(self) -> dict:
        return {"path": self.path, "loaded": self.loaded, "loaded_bytes": self.loaded_bytes,
                "credited_bits": self.credited_bits, "note": self.note, "origin": self.origin,
                "last_save": self.last_save, "last_save_credit": self.last_save_credit, "saves": self.saves,
                "failures": self.failures, "last_error": self.last_error}

    def __repr__(self) -> str:
        return f"SeedState({self.as_dict()!r})"


# ---------------------------------------------------------------- format (no I/O)

def _checksum(head: bytes, payload: bytes) -> bytes:
    h = BLAKE2b.new(digest_bits=8 * CHECKSUM_SIZE)
    h.update(head)
    h.update(payload)
    return h.digest()


def encode(payload: bytes, credit: bool, fingerprint: bytes | None = None) -> bytes:
    """The bytes of a seed file carrying `payload`, bound to `fingerprint` if given."""
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, not {len(payload)}")
    if fingerprint is not None and len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
    flags = (FLAG_CREDIT if credit else 0) | (FLAG_BOUND if fingerprint is not None else 0)
    head = _HEAD.pack(MAGIC, VERSION, flags, len(payload)) + (fingerprint or bytes(FINGERPRINT_SIZE))
    return head + _checksum(head, payload) + payload


def encode_v1(payload: bytes, credit: bool) -> bytes:
    """A version 1 file, as prngd wrote before machine fingerprints (for tests of the upgrade)."""
    head = _HEAD.pack(MAGIC, 1, FLAG_CREDIT if credit else 0, len(payload))
    return head + _checksum(head, payload) + payload


def parse(data: bytes) -> Seed:
    """The seed in `data` (version 1 or 2), or SeedFormatError if it is not whole and valid."""
    if len(data) < V1_HEADER_SIZE:
        raise SeedFormatError(f"short file ({len(data)} bytes, a header alone is at least {V1_HEADER_SIZE})")
    magic, version, flags, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SeedFormatError("not a prngd seed file (bad magic)")
    if version == 1:
        known, header = FLAG_CREDIT, V1_HEADER_SIZE
    elif version == 2:
        known, header = FLAG_CREDIT | FLAG_BOUND, HEADER_SIZE
    else:
        raise SeedFormatError(f"unknown seed file version {version}")
    if flags & ~known:
        raise SeedFormatError(f"unknown flags {flags:#04x}")
    if len(data) != header + length or length == 0:
        raise SeedFormatError(f"length {length} does not match the file ({len(data) - header} payload bytes)")
    covered = header - CHECKSUM_SIZE  # everything before the checksum
    payload = data[header:]
    if not hmac.compare_digest(data[covered:header], _checksum(data[:covered], payload)):
        raise SeedFormatError("checksum mismatch (torn or corrupt file)")
    fingerprint = data[_HEAD.size:covered] if flags & FLAG_BOUND else None
    if version == 2 and fingerprint is None and any(data[_HEAD.size:covered]):
        raise SeedFormatError("a fingerprint without the flag that says it is one")
    return Seed(payload, bool(flags & FLAG_CREDIT), version, fingerprint)


def _context() -> bytes:
    """pid, clocks and a fresh nonce: two starts from copies of one seed never match."""
    # os.urandom and hmac.compare_digest are what secrets offers under other names (without its import).
    return struct.pack(">QQQ", os.getpid(), time.time_ns(), time.monotonic_ns()) + os.urandom(32)


# ---------------------------------------------------------------- reading

class _Old:
    """The old seed as read at start, and how far to trust it."""

    __slots__ = ("raw", "payload", "bits", "note", "origin", "level")

    def __init__(self, raw: bytes | None = None, payload: bytes = b"", bits: int = 0, *, note: str | None = None,
                 origin: str | None = None, level: int = logging.WARNING) -> None:
        self.raw = raw  # what was read and is to be mixed
        self.payload = payload  # the valid payload, when creditable
        self.bits = bits  # what it may be credited, once replaced on disk
        self.note = note  # why not (or why not read)
        self.origin = origin
        self.level = level


def _trust_problem(st: os.stat_result, euid: int) -> str | None:
    if st.st_uid != euid:
        return f"it is owned by uid {st.st_uid}, not by prngd's euid {euid}"
    if st.st_mode & 0o077:
        return f"its mode {stat.S_IMODE(st.st_mode):04o} lets group or others read or write it"
    return None


def _read_bounded(fd: int, limit: int) -> bytes:
    buf = bytearray()
    while len(buf) < limit:
        chunk = os.read(fd, limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def looks_like_prngd_seed(raw: bytes) -> bool:
    """Whether `raw` is what the original PRNGD writes: exactly 4096 bytes of generator output.

    PRNGD's file has no header, so it is told by its size and by looking
    random: every byte value present in near-equal measure, and nothing
    deflate can shorten.  Text fails at once (a space alone appears hundreds
    of times in 4 KiB), and so does anything with structure or repeats; 4096
    random bytes pass for any practical purpose (each value is expected 16
    times: over 64, or fewer than 200 distinct values, would be a 1e-15 event,
    and deflate stores such input, adding its 11 bytes of framing).  Data
    that is already compressed or encrypted, of exactly 4096 bytes, would
    pass too: the one case this rule cannot tell apart.
    """
    if len(raw) != PRNGD_SEED_SIZE:
        return False
    counts = [0] * 256
    for b in raw:
        counts[b] += 1
    if max(counts) > 64 or sum(1 for c in counts if c) < 200:
        return False
    return len(zlib.compress(raw, 9)) > len(raw)


def _is_text(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


def _foreign(path: str, what: str, feedable: bool = False) -> ForeignFile:
    """The refusal; for a regular file, how to give its bytes to the pool instead."""
    fix = "name another seed file with -s, or -n for none"
    if feedable:
        fix = f"to mix its bytes into the pool, run prngd add {path} once prngd serves; {fix}"
    return ForeignFile(f"seed file {path}: {what}; left untouched ({fix})", what)


def _where_prngd_leaves_its_seed(path: str, st: os.stat_result, user_uid: int | None) -> bool:
    """PRNGD's compiled-in name, or the mode PRNGD sets; owned by whom PRNGD (or prngd) runs as."""
    if not ownfile.ours_by_owner(st, user_uid):
        return False
    return os.path.basename(path) == PRNGD_SEED_NAME or stat.S_IMODE(st.st_mode) == PRNGD_SEED_MODE


def _identify(path: str, user_uid: int | None = None) -> tuple[bytes | None, os.stat_result | None]:
    """The bytes at `path` (None if absent) and their stat; ForeignFile if prngd did not write them.

    `user_uid`: -u's uid, when called as root before the drop.
    """
    try:
        fd = os.open(path, os.O_RDONLY | ownfile.SAFE_OPEN)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.ELOOP:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise _foreign(path, f"it is a symbolic link (to {target}), never followed") from None
        raise _foreign(path, f"cannot open it to see what it is: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        why = ownfile.refusal(st, "a seed file")
        if why:
            # A hard link would keep the old seed under another name, to be credited again.
            raise _foreign(path, f"it {why}", feedable=stat.S_ISREG(st.st_mode))
        if st.st_size > MAX_FILE_SIZE:
            raise _foreign(path, f"it holds {st.st_size} bytes, more than any seed file ({MAX_FILE_SIZE} at most)",
                           feedable=True)
        raw = _read_bounded(fd, MAX_FILE_SIZE + 1)
    except OSError as e:
        raise _foreign(path, f"cannot read it to see what it is: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_SIZE:  # grew while we looked
        raise _foreign(path, f"it holds more than {MAX_FILE_SIZE} bytes, more than any seed file", feedable=True)
    if not raw or raw.startswith(MAGIC[:len(raw)]):
        return raw, st
    if looks_like_prngd_seed(raw):
        if _where_prngd_leaves_its_seed(path, st, user_uid):
            return raw, st
        raise _foreign(path, f"it is {len(raw)} bytes of random data (mode {stat.S_IMODE(st.st_mode):04o}, "
                             f"owner uid {st.st_uid}), not where PRNGD leaves its seed (named {PRNGD_SEED_NAME}, "
                             f"or mode {PRNGD_SEED_MODE:04o}; owned by root or prngd's user), so maybe a key",
                       feedable=True)
    what = "a text file" if _is_text(raw) else "data"
    raise _foreign(path, f"it is {what} of {len(raw)} bytes, neither a prngd seed file nor PRNGD's", feedable=True)


def check(path: str, user_uid: int | None = None) -> None:
    """ForeignFile unless prngd may replace what is at `path` (as root, before -u USER's uid is taken)."""
    _identify(str(path), user_uid)


def _read_old(path: str, fingerprint: bytes | None, euid: int | None = None) -> _Old:
    """What is at `path`, how far to trust it (for a daemon running as `euid`, default ours), and why;
    ForeignFile for what prngd did not write."""
    raw, st = _identify(path)
    if raw is None:
        return _Old(note="no seed file yet", level=logging.INFO)
    if not raw:
        return _Old(raw, note="the file was empty", level=logging.INFO)
    if len(raw) >= len(MAGIC) and not raw.startswith(MAGIC):  # what _identify let through: PRNGD's
        # Whether it was replaced is said once the save is done (load_and_replace).
        return _Old(raw, note="a seed file of the original PRNGD: mixed once, not credited",
                    origin=ORIGIN_PRNGD, level=logging.INFO)
    try:
        seed = parse(raw)
    except SeedFormatError as e:
        return _Old(raw, note=str(e), origin=ORIGIN_UNKNOWN)
    if seed.version == 1:
        return _Old(raw, note="written by an older prngd, without a machine fingerprint: mixed once, not credited",
                    origin=ORIGIN_OLD_PRNGD, level=logging.INFO)
    problem = _trust_problem(st, os.geteuid() if euid is None else euid)
    if seed.fingerprint is None:
        origin = ORIGIN_UNBOUND
        note = "written where nothing identified the machine, so it may be a copy"
    elif fingerprint is None:
        origin = ORIGIN_UNKNOWN
        note = "nothing identifies this machine (no machine-id, DMI product UUID or permanent MAC address)"
    elif not hmac.compare_digest(seed.fingerprint, fingerprint):
        origin = ORIGIN_OTHER_MACHINE
        note = "written on another machine (a clone, or a copied disk or image): its machine fingerprint is not this one's"
    else:
        origin, note = ORIGIN_THIS_MACHINE, None
    if problem:
        return _Old(raw, note=problem, origin=origin)
    if note:
        return _Old(raw, note=note, origin=origin, level=logging.INFO)
    if not seed.credit:
        return _Old(raw, note="the prngd that wrote it was not seeded", origin=origin, level=logging.INFO)
    return _Old(raw, seed.payload, min(MAX_CREDIT_BITS, 8 * len(seed.payload)), origin=origin, level=logging.INFO)


def assess(path: str, fingerprint: bytes | None, euid: int) -> tuple[str | None, int, str | None]:
    """What a start as `euid` would make of the seed at `path`, reading it only:
    (who wrote it, bits it would credit, why not).  Raises ForeignFile where a start would refuse."""
    old = _read_old(path, fingerprint, euid)
    return old.origin, old.bits, old.note


# ---------------------------------------------------------------- writing

# Compiled at its first use (re's cache): a start without a seed file never needs it.
_TEMP = r"^\.(?P<base>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$"


def _describe(e: OSError) -> str:
    text = e.strerror or str(e)
    return f"{text} ({e.filename})" if e.filename else text


def _make_dir(directory: str) -> None:
    """Create the seed directory (0700) if it is missing."""
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        log.info("created seed directory %s (mode %04o)", directory, DIR_MODE)


def _check_target(path: str) -> None:
    """Before renaming over `path`: what is there now must still be what prngd may replace.

    A link, another name's file or anything prngd did not write, put there
    while it ran, stays (OSError: the save fails, logged, and is retried).
    """
    try:
        _identify(path)
    except ForeignFile as e:
        raise OSError(errno.EEXIST, f"{e.what}; left in place", path) from None


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data`: temp file (O_EXCL, 0600), fsync, rename, fsync the directory.

    Raises OSError; a failure leaves the old file as it was and no temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    _make_dir(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _check_target(path)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _remove_stale_temps(path: str) -> None:
    """Temporary files left by a prngd killed mid-save hold seed material: remove them."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = re.match(_TEMP, name)
        if not m or m["base"] != base:
            continue
        pid = int(m["pid"])
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # its writer is still alive (another prngd on the same file)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        try:
            os.unlink(os.path.join(directory, name))
            log.debug("removed stale temporary seed file %s", name)
        except OSError:
            pass


def read_seed(path: str) -> Seed:
    """Parse the seed file at `path` (not following a symlink); raises OSError or SeedFormatError."""
    fd = os.open(path, os.O_RDONLY | ownfile.SAFE_OPEN)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SeedFormatError("not a regular file")
        return parse(_read_bounded(fd, MAX_FILE_SIZE + 1))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- what the server calls

def _save(path: str, pool, state: SeedState, credit: bool) -> bool:
    try:
        payload = pool.read(SEED_BYTES, allow_unseeded=True)
        write_atomic(path, encode(payload, credit, state.fingerprint))
    except OSError as e:
        state.failures += 1
        state.last_error = _describe(e)
        log.error("seed file %s: save failed: %s; retrying at the next save", path, state.last_error)
        return False
    state.saves += 1
    state.last_save = time.time()
    state.last_save_credit = credit
    state.last_error = None
    log.debug("seed file %s saved (%s)", path, "credit" if credit else "no credit")
    return True


def save(path: str, pool, state: SeedState) -> bool:
    """Replace the seed file with fresh pool output; False (logged once) on any OS error."""
    return _save(path, pool, state, bool(pool.seeded))


def load_and_replace(path: str, pool, machine=None) -> SeedState:
    """Mix the old seed into the pool, replace it on disk, then credit it if it earned it.

    Called once, before any socket opens.  `machine` is this machine's
    identity.Identity (computed here when None).  Raises ForeignFile, before
    anything is written, when something prngd did not write is at `path`.
    Otherwise never raises on a bad file or a failing disk: the outcome is
    logged (one line) and returned.
    """
    path = str(path)
    if machine is None:
        from prngd.identity import machine_identity

        machine = machine_identity()
    old = _read_old(path, machine.fingerprint)  # may raise ForeignFile: nothing written yet
    state = SeedState(path=path, fingerprint=machine.fingerprint, origin=old.origin)
    pool.add("seedfile", _context(), 0)
    _remove_stale_temps(path)
    if old.raw is not None:
        pool.add("seedfile", old.raw, 0)  # mixed now; credited below only once replaced
        state.loaded, state.loaded_bytes = True, len(old.raw)
    # Into the key before the replacement is drawn: otherwise the new file would
    # come from a key the old seed never touched, and the chain from one seed to
    # the next (seedrng's point) would be broken.
    pool.reseed()

    # A creditable old seed (256 bits, now in the pool) makes the new one creditable too,
    # even if the pool's accounting only learns of it below.
    replaced = _save(path, pool, state, bool(pool.seeded) or old.bits >= MAX_CREDIT_BITS)

    if old.bits and replaced:
        pool.add("seedfile", old.payload, old.bits)
        state.credited_bits = old.bits
    elif old.bits:
        old.note, old.level = "it could not be replaced on disk, so it could be used again", logging.WARNING
    elif old.origin == ORIGIN_PRNGD and replaced:
        old.note += ", replaced in prngd's format"
    elif old.origin == ORIGIN_PRNGD:
        old.note, old.level = old.note + ", not yet replaced: the save failed, retried at the next one", logging.WARNING
    state.note = old.note

    if state.loaded and state.credited_bits:
        log.info("seed file %s: loaded %d bytes, credited %d bits", path, state.loaded_bytes, state.credited_bits)
    elif state.loaded:
        log.log(old.level, "seed file %s: loaded %d bytes, not credited: %s", path, state.loaded_bytes, old.note)
    else:
        log.log(old.level, "seed file %s: not loaded: %s", path, old.note)
    return state
