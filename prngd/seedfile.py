"""The seed file: randomness carried from one run to the next, and never used twice.

The rules, after seedrng (busybox) and systemd-random-seed:

* At start, before any byte is served, the old seed is read (a regular file,
  opened with O_NOFOLLOW, at most 4 KiB) and mixed into the pool together with
  the pid, the time and a fresh nonce, so two starts from copies of one seed
  diverge even with no other input.
* At once it is replaced by fresh pool output.  Only when that replacement is
  on disk is the old seed credited: a seed is never credited twice, and a
  crash before the rename leaves an old seed that nothing has been served from.
* Every write is atomic: a temporary file in the same directory (O_EXCL,
  0600), fsync, rename over the seed, fsync the directory.  A crash at any
  moment leaves either the old or the new file whole.
* A seed is credited (at most 256 bits) only if a seeded prngd wrote it (the
  header's credit flag, as seedrng keeps seed.credit apart from
  seed.no-credit) and nobody else could have read or written it: a regular
  file owned by our euid with no group or other permission bits.  Anything
  else readable is mixed uncredited, with a warning.
* A symbolic link in place of the seed is never read nor written through.
  rename() replaces the link itself, never its target; we do that only in a
  directory nobody else may write (owned by us or root, not group/other
  writable), where the link can only be an administrator's, and log it.  In
  any other directory the link is left alone and each save fails, logged.
* A failing save (read-only directory, full disk, I/O error) is logged once
  and retried at the next interval; it never raises into the server.

File format (integers big-endian), 556 bytes as prngd writes it:

    offset size  field
    0      8     magic b"PRNGSEED"
    8      1     version, 1
    9      1     flags: bit 0 CREDIT (the pool was seeded when this was
                 written); the other bits are 0
    10     2     payload length N, 1..4052
    12     32    BLAKE2b-256 of bytes 0..11 followed by the payload
    44     N     payload: pool output (512 bytes)

The checksum makes a torn, truncated or corrupted file visible; such a file
is still mixed, uncredited.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import secrets
import stat
import struct
import time
from dataclasses import dataclass

from Crypto.Hash import BLAKE2b

log = logging.getLogger("prngd.seedfile")

MAGIC = b"PRNGSEED"
VERSION = 1
FLAG_CREDIT = 0x01
_HEAD = struct.Struct(">8sBBH")
CHECKSUM_SIZE = 32
HEADER_SIZE = _HEAD.size + CHECKSUM_SIZE  # 44
MAX_FILE_SIZE = 4096  # we never read more than this of a seed file
MAX_PAYLOAD = MAX_FILE_SIZE - HEADER_SIZE
SEED_BYTES = 512  # pool output per seed file (seedrng writes 32..512)
MAX_CREDIT_BITS = 256  # whatever the seed's size
DIR_MODE = 0o700
FILE_MODE = 0o600


class SeedFormatError(ValueError):
    """The bytes are not a whole, valid prngd seed file; the message says why."""


@dataclass(frozen=True)
class Seed:
    payload: bytes
    credit: bool
    version: int = VERSION


@dataclass
class SeedState:
    """What the status command reports about the seed file."""

    path: str
    loaded: bool = False  # an old seed was read and mixed at start
    loaded_bytes: int = 0
    credited_bits: int = 0  # credited from the old seed at start
    note: str | None = None  # why the old seed was not credited (or not read)
    last_save: float | None = None  # time.time() of the last good save
    last_save_credit: bool | None = None  # the credit flag that save wrote
    saves: int = 0  # good saves, counting the replacement at start
    failures: int = 0
    last_error: str | None = None  # of the last save, None once a save succeeds

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- format (no I/O)

def _checksum(head: bytes, payload: bytes) -> bytes:
    h = BLAKE2b.new(digest_bits=8 * CHECKSUM_SIZE)
    h.update(head)
    h.update(payload)
    return h.digest()


def encode(payload: bytes, credit: bool) -> bytes:
    """The bytes of a seed file carrying `payload`."""
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, not {len(payload)}")
    head = _HEAD.pack(MAGIC, VERSION, FLAG_CREDIT if credit else 0, len(payload))
    return head + _checksum(head, payload) + payload


def parse(data: bytes) -> Seed:
    """The seed in `data`, or SeedFormatError if it is not whole and valid."""
    if len(data) < HEADER_SIZE:
        raise SeedFormatError(f"short file ({len(data)} bytes, the header alone is {HEADER_SIZE})")
    magic, version, flags, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SeedFormatError("not a prngd seed file (bad magic)")
    if version != VERSION:
        raise SeedFormatError(f"unknown seed file version {version}")
    if flags & ~FLAG_CREDIT:
        raise SeedFormatError(f"unknown flags {flags:#04x}")
    if len(data) != HEADER_SIZE + length or length == 0:
        raise SeedFormatError(f"length {length} does not match the file ({len(data) - HEADER_SIZE} payload bytes)")
    payload = data[HEADER_SIZE:]
    if not secrets.compare_digest(data[_HEAD.size:HEADER_SIZE], _checksum(data[:_HEAD.size], payload)):
        raise SeedFormatError("checksum mismatch (torn or corrupt file)")
    return Seed(payload, bool(flags & FLAG_CREDIT), version)


def _context() -> bytes:
    """pid, clocks and a fresh nonce: two starts from copies of one seed never match."""
    return struct.pack(">QQQ", os.getpid(), time.time_ns(), time.monotonic_ns()) + secrets.token_bytes(32)


# ---------------------------------------------------------------- reading

@dataclass
class _Old:
    raw: bytes | None = None  # what was read and is to be mixed
    payload: bytes = b""  # the valid payload, when creditable
    bits: int = 0  # what it may be credited, once replaced on disk
    note: str | None = None  # why not (or why not read)
    level: int = logging.WARNING


def _trust_problem(st: os.stat_result) -> str | None:
    euid = os.geteuid()
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


def _read_old(path: str) -> _Old:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return _Old(note="no seed file yet")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return _Old(note="it is a symbolic link: refused, not read and not mixed", level=logging.ERROR)
        return _Old(note=f"cannot open it: {_describe(e)}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _Old(note="it is not a regular file: refused, not read", level=logging.ERROR)
        raw = _read_bounded(fd, MAX_FILE_SIZE + 1)
    except OSError as e:
        return _Old(note=f"cannot read it: {_describe(e)}")
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_SIZE:
        raw = raw[:MAX_FILE_SIZE]
        return _Old(raw, note=f"it is larger than {MAX_FILE_SIZE} bytes, not a prngd seed file")
    problem = _trust_problem(st)
    if problem:
        return _Old(raw, note=problem)
    try:
        seed = parse(raw)
    except SeedFormatError as e:
        return _Old(raw, note=str(e))
    if not seed.credit:
        return _Old(raw, note="the prngd that wrote it was not seeded", level=logging.INFO)
    return _Old(raw, seed.payload, min(MAX_CREDIT_BITS, 8 * len(seed.payload)), level=logging.INFO)


# ---------------------------------------------------------------- writing

_TEMP = re.compile(r"^\.(?P<base>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def _describe(e: OSError) -> str:
    text = e.strerror or str(e)
    return f"{text} ({e.filename})" if e.filename else text


def _make_dir(directory: str) -> None:
    """Create the seed directory (0700) if it is missing."""
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        log.info("created seed directory %s (mode %04o)", directory, DIR_MODE)


def _dir_is_private(directory: str) -> bool:
    st = os.stat(directory)
    return st.st_uid in (os.geteuid(), 0) and not st.st_mode & 0o022


def _check_target(path: str, directory: str) -> None:
    """Refuse to rename over a symlink that someone else may have put there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        if not _dir_is_private(directory):
            raise OSError(errno.ELOOP, "it is a symbolic link in a directory others can write; left in place", path)
        log.warning("seed file %s is a symbolic link; replacing the link (not its target) with a regular file", path)


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
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _check_target(path, directory)
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
        m = _TEMP.match(name)
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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
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
        write_atomic(path, encode(payload, credit))
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


def load_and_replace(path: str, pool) -> SeedState:
    """Mix the old seed into the pool, replace it on disk, then credit it if it earned it.

    Called once, before any socket opens.  Never raises on a bad file or a
    failing disk: the outcome is logged (one line) and returned.
    """
    path = str(path)
    state = SeedState(path=path)
    pool.add("seedfile", _context(), 0)
    _remove_stale_temps(path)
    old = _read_old(path)
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
    state.note = old.note

    if state.loaded and state.credited_bits:
        log.info("seed file %s: loaded %d bytes, credited %d bits", path, state.loaded_bytes, state.credited_bits)
    elif state.loaded:
        log.log(old.level, "seed file %s: loaded %d bytes, not credited: %s", path, state.loaded_bytes, old.note)
    else:
        log.log(old.level, "seed file %s: not loaded: %s", path, old.note)
    return state
