"""Feed the kernel's random pool from an EGD server (what ekeyd-egd-linux does).

For virtual machines and containers that can reach an EGD socket: pull bytes
from it and give them to the kernel.

- With CAP_SYS_ADMIN the bytes go in through the RNDADDENTROPY ioctl on the
  urandom device and are credited (8 bits a byte, but never more than the EGD
  server says it holds) -- only when the server is one we can trust: a Unix
  socket whose listening process (SO_PEERCRED, told by the kernel, not by the
  server) runs as root or as a uid given with --trust-uid.  Anyone may bind a
  socket at a path while the daemon is down, and a TCP server cannot be
  identified at all: their bytes are mixed in with 0 bits of credit, said in
  one line.
- Without it (EPERM, as in most containers) they are written to /dev/urandom:
  mixed into the pool, credited nothing.  Which of the two happens is decided
  once at start, by an RNDADDENTROPY carrying no bytes, and said in a log line.

After a restore.  When the daemon reseeds after a restore (detected, or asked
by `prngd reseed`) it bumps `restore_generation` in its status; the loop reads
that from the daemon's admin socket at every check (`poll` seconds) and, when
it grows, feeds at once and asks the kernel to reseed its own generator from
its input pool (RNDRESEEDCRNG; with CAP_SYS_ADMIN only).

When to feed: the kernel asks for more input while `entropy_avail` is under
`write_wakeup_threshold`, so that is checked every `poll` seconds and the
shortfall fed at once.  Since Linux 5.18 `entropy_avail` reads 256 (and the
threshold 256) for good once the pool is initialised, so the threshold never
fires there; a regular feed every `interval` seconds (default 60) happens
whatever it says.
"""

from __future__ import annotations

import fcntl
import logging
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from prngd import client

log = logging.getLogger(__name__)

# _IOW('R', 0x03, int[2]): struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
ENTROPY_AVAIL = "/proc/sys/kernel/random/entropy_avail"
WRITE_WAKEUP_THRESHOLD = "/proc/sys/kernel/random/write_wakeup_threshold"
URANDOM = "/dev/urandom"
MAX_FEED = 512  # bytes in one feed, however large the shortfall


def rand_pool_info(data: bytes, bits: int) -> bytearray:
    """The ioctl argument: entropy_count, buf_size, then the bytes.

    A bytearray, so fcntl.ioctl passes it in place (bytes would be copied
    into a 1024-byte buffer and could not carry a larger feed).
    """
    return bytearray(struct.pack("ii", bits, len(data)) + data)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@dataclass
class Feed:
    """What one feed did."""

    nbytes: int
    credited_bits: int
    entropy_avail_before: int | None
    entropy_avail_after: int | None
    distrust: str | None = None  # why the server's claim was not credited, when that was the reason


class KernelFeeder:
    """Moves bytes from an EGD server into the kernel; paths and the ioctl are injectable for tests."""

    def __init__(self, connect: Callable[[], client.EGDClient], *, entropy_avail: str = ENTROPY_AVAIL,
                 threshold: str = WRITE_WAKEUP_THRESHOLD, urandom: str = URANDOM,
                 ioctl: Callable = fcntl.ioctl, credit: bool = True, trusted_uids: Iterable[int] = ()):
        self.connect = connect
        self.trusted_uids = frozenset(trusted_uids) | {0}
        self.entropy_avail_path = entropy_avail
        self.threshold_path = threshold
        self.urandom_path = urandom
        self.ioctl = ioctl
        self.credit, self.why = self._probe() if credit else (False, "--no-credit given")

    def _probe(self) -> tuple[bool, str]:
        """(may credit, why): an RNDADDENTROPY of zero bytes tells without changing the pool."""
        try:
            with open(self.urandom_path, "ab", buffering=0) as f:
                self.ioctl(f.fileno(), RNDADDENTROPY, rand_pool_info(b"", 0), True)
        except OSError as e:
            return False, f"RNDADDENTROPY on {self.urandom_path}: {e.strerror or e}"
        return True, f"RNDADDENTROPY on {self.urandom_path} is allowed"

    def describe(self) -> str:
        if self.credit:
            return f"feeding the kernel with credit via RNDADDENTROPY on {self.urandom_path}"
        return f"writing to {self.urandom_path} without credit ({self.why})"

    def entropy_avail(self) -> int | None:
        return _read_int(self.entropy_avail_path)

    def threshold(self) -> int | None:
        return _read_int(self.threshold_path)

    def shortfall_bytes(self) -> int:
        """Bytes the kernel asks for now: its shortfall under write_wakeup_threshold (0 when none)."""
        avail, threshold = self.entropy_avail(), self.threshold()
        if avail is None or threshold is None or avail >= threshold:
            return 0
        return min(MAX_FEED, -(-(threshold - avail) // 8))

    def distrust(self, egd: client.EGDClient) -> str | None:
        """Why the server's entropy claim may not be credited (None: it may): it must be a Unix
        socket whose listener runs as root or a trusted uid."""
        uid = egd.peer_uid()
        if uid is None:
            return f"{egd.address} is not a Unix socket, so who serves it cannot be checked"
        if uid in self.trusted_uids:
            return None
        return f"the server on {egd.address} runs as uid {uid}, neither root nor trusted (--trust-uid)"

    def feed(self, nbytes: int) -> Feed:
        """Fetch `nbytes` from the EGD server and hand them to the kernel."""
        nbytes = max(1, min(nbytes, MAX_FEED))
        before = self.entropy_avail()
        distrust = None
        with self.connect() as egd:
            data = egd.read(nbytes)
            if self.credit:
                distrust = self.distrust(egd)
            server_bits = egd.entropy_level() if self.credit and distrust is None else 0
        bits = min(8 * len(data), server_bits)
        with open(self.urandom_path, "ab", buffering=0) as f:
            if self.credit:
                # An untrusted server's bytes still go through the ioctl, with 0 bits: mixed, not credited.
                self.ioctl(f.fileno(), RNDADDENTROPY, rand_pool_info(data, bits), True)
            else:
                f.write(data)
                bits = 0
        return Feed(len(data), bits, before, self.entropy_avail(), distrust)

    def after_restore(self, nbytes: int) -> tuple[Feed, str]:
        """The daemon reseeded after a restore: feed now, then have the kernel reseed its generator
        from its input pool (RNDRESEEDCRNG), which only the ioctl's privilege allows."""
        fed = self.feed(nbytes)
        if not self.credit:
            return fed, f"the kernel's generator not reseeded ({self.why})"
        with open(self.urandom_path, "ab", buffering=0) as f:
            self.ioctl(f.fileno(), RNDRESEEDCRNG, 0)
        return fed, "the kernel's generator reseeded (RNDRESEEDCRNG)"

    def run(self, *, interval: float = 60.0, poll: float = 2.0, nbytes: int = 64,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
            rounds: int | None = None, restores: Callable[[], tuple | None] | None = None,
            seen: tuple | None = None) -> None:
        """Feed `nbytes` every `interval` seconds, and the shortfall whenever the threshold asks; forever
        (or `rounds` checks, for tests).  A failing EGD server is logged and retried at the next check.

        `restores()`, read at every check, is the daemon's (pid, restore_generation), or None when it
        cannot be read: a generation grown under the same pid is a restore, followed at once.  `seen`
        is the one read last, if any was before.
        """
        next_regular = clock()
        done = 0
        if restores and seen is None:
            seen = restores()
        said: str | None = None  # the last distrust said, so a lasting one is said once
        while rounds is None or done < rounds:
            done += 1
            want = self.shortfall_bytes()
            if clock() >= next_regular:
                want = max(want, nbytes)
                next_regular = clock() + interval
            now = restores() if restores else None
            restored = now is not None and seen is not None and now[0] == seen[0] and now[1] > seen[1]
            if now is not None and not restored:
                seen = now
            try:
                if restored:
                    fed, kernel = self.after_restore(max(want, nbytes))
                    seen = now  # followed: a feed that failed is tried again at the next check
                    log.info("the daemon (pid %s) reseeded after a restore (restore generation %s): fed %d bytes, "
                             "%d bits credited; %s", now[0], now[1], fed.nbytes, fed.credited_bits, kernel)
                elif want:
                    fed = self.feed(want)
                    log.debug("fed %d bytes, %d bits credited; entropy_avail %s -> %s", fed.nbytes,
                              fed.credited_bits, fed.entropy_avail_before, fed.entropy_avail_after)
                if (restored or want) and fed.distrust != said:
                    said = fed.distrust
                    if said:
                        log.warning("not crediting: %s; mixing its bytes in with 0 bits", said)
                    else:
                        log.info("crediting again: the server is trusted")
            except (client.EGDError, OSError) as e:
                log.warning("cannot feed the kernel: %s", e)
            sleep(max(0.0, min(poll, next_regular - clock())))


def restore_watch(admin_path: str, timeout: float) -> Callable[[], tuple | None]:
    """The daemon's (pid, restore_generation) from its admin socket, or None when it cannot be read.

    Polled, not pushed: the admin socket answers one short request a connection, and a
    counter read every few seconds cannot miss a restore between two reads.
    """
    from prngd import admin

    def read() -> tuple | None:
        try:
            status = admin.get_status(admin_path, timeout)
        except (OSError, admin.AdminError):
            return None  # restarting, or gone for now: the next check tries again
        generation = status.get("restore_generation")
        return (status.get("pid"), generation) if isinstance(generation, int) else None
    return read


def run_cli(args) -> int:
    """`prngd feed-kernel`; `args` from client's parser."""
    from prngd import config, egd

    logging.basicConfig(level=logging.INFO, format="prngd feed-kernel: %(message)s", stream=sys.stderr)
    try:
        address = egd.parse_address(args.socket)
    except ValueError as e:
        print(f"prngd feed-kernel: {e}", file=sys.stderr)
        return 2
    paths = {k: v for k, v in (("entropy_avail", args.entropy_avail), ("threshold", args.threshold_file),
                               ("urandom", args.urandom)) if v}
    feeder = KernelFeeder(lambda: client.EGDClient(args.socket, args.timeout), credit=not args.no_credit,
                          trusted_uids=args.trust_uid, **paths)
    if args.once:
        print(feeder.describe())
        try:
            fed = feeder.feed(max(args.nbytes, feeder.shortfall_bytes()))
        except OSError as e:
            print(f"prngd feed-kernel: cannot write to {feeder.urandom_path}: {e.strerror or e}", file=sys.stderr)
            return 1
        if fed.distrust:
            how = f"without credit ({fed.distrust}: mixed in with 0 bits)"
        else:
            how = f"with credit ({fed.credited_bits} bits)" if feeder.credit else "without credit"
        print(f"fed {fed.nbytes} bytes from {args.socket} {how}; entropy_avail {fed.entropy_avail_before} -> "
              f"{fed.entropy_avail_after}")
        return 0
    log.info("%s, from %s: every %gs, and when entropy_avail < write_wakeup_threshold (checked every %gs)",
             feeder.describe(), args.socket, args.interval, args.poll)
    admin_path = args.admin
    if admin_path is None and address.is_unix:
        admin_path = config.admin_socket_for(args.socket)
    restores = seen = None
    if admin_path is None:
        log.info("not following the daemon's restores: %s is not a Unix socket (give --admin PATH)", args.socket)
    else:
        restores = restore_watch(admin_path, args.timeout)
        seen = restores()
        if seen is None:
            log.info("not following the daemon's restores: no status from its admin socket %s (--admin PATH)",
                     admin_path)
            restores = None
        else:
            log.info("following the daemon's restores through %s (pid %s, restore generation %s)", admin_path,
                     *seen)
    feeder.run(interval=args.interval, poll=args.poll, nbytes=args.nbytes, restores=restores, seen=seen)
    return 0
