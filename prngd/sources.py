"""What feeds the pool: the five entropy sources and the estimate each credits.

A source collects one sample at a time (a blocking call, run in a worker
thread) and says how many bits of it it is willing to vouch for.  Every
estimate here is deliberately low and capped per sample: the pool mixes all
bytes in regardless, so under-crediting costs nothing but a slower count,
while over-crediting is the one mistake a PRNG daemon must not make.

    source   what it reads                              credit per sample
    kernel   getrandom(), 32-64 bytes                   8 bits/byte once the kernel CRNG is ready, else 0
    system   psutil snapshot with ns time stamps         1 bit per 64 bytes, at most 8 bits
    jitter   time deltas of a small CPU-bound loop      SP 800-90B MCV estimate / 16, at most 32 bits
    command  stdout of an external command (PRNGD)      its configured bits per byte, at most 16 bits
    file     a file or device, up to max_bytes          its configured bits per byte, at most 8 per byte
    upstream another EGD server's 0x02 reply ([upstream])  its configured bits per byte (default 0), at most 8

Health tests (prngd.health) guard the jitter source and any file claimed to
carry at least 1 bit per byte (a hardware RNG device).  `build_sources()`
makes the sources a configuration asks for; `gather()` (prngd.gather) runs
them.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import struct
import subprocess
import threading
import time
from typing import Callable, Sequence

import psutil

from prngd import privileges
from prngd.client import EGDClient, EGDError
from prngd.gather import MAX_BACKOFF, Sample, Source, SourceError
from prngd.health import HealthTestFailure, HealthTests, mcv_min_entropy
from prngd.kernel import kernel_ready

log = logging.getLogger("prngd.sources")

# A command may run for its own timeout plus this before gather abandons it.
COMMAND_GRACE = 5.0

# Per-sample caps, in bits.  See each source for the reasoning.
SYSTEM_BYTES_PER_BIT = 64
SYSTEM_CAP_BITS = 8.0
JITTER_CAP_BITS = 32.0
COMMAND_CAP_BITS = 16.0

_MASK64 = (1 << 64) - 1


class KernelSource(Source):
    """getrandom() output: full credit once the kernel says its generator is seeded, none before.

    os.urandom() is getrandom() without blocking; before the CRNG is ready it
    may return output of an unseeded generator, which is why readiness is
    checked first and nothing is credited without it.
    """

    kind = "kernel"
    # Its sample at start is prngd.kernel.seed_from_kernel's, taken just
    # before serving (the server calls it whenever this source is
    # configured, and books it here with `book`): gather samples it first
    # after an interval, not a second time at once.
    sample_at_start = False

    def __init__(self, nbytes: int = 32, interval: float = 60.0, name: str = "kernel"):
        self.nbytes = max(1, min(int(nbytes), 256))  # getrandom fills up to 256 bytes in one call
        super().__init__(name, interval, 8 * self.nbytes)
        self.ready = False

    def collect(self) -> Sample:
        self.ready = kernel_ready()
        data = os.urandom(self.nbytes)
        return Sample(data, 8.0 * len(data) if self.ready else 0.0)

    def book(self, ready: bool, bits: float) -> None:
        """Count the start seed (seed_from_kernel's) as this source's first sample."""
        self.ready = ready
        self.samples += 1
        self.credited_bits += bits

    def stats(self) -> dict:
        return {**super().stats(), "kernel_ready": self.ready, "bytes": self.nbytes}


# ---- system statistics

_Q = struct.Struct("<Q").pack
_D = struct.Struct("<d").pack
_STAMP = struct.Struct("<QQ").pack


def _pack(out: bytearray, value) -> None:
    """Append `value` (psutil's numbers, named tuples, dicts, lists) as compact binary.

    Packing rather than repr() keeps the byte count, on which the credit is
    based, close to the information actually present.
    """
    if value is None:
        out.append(0xFF)
    elif isinstance(value, bool):
        out.append(value)
    elif isinstance(value, int):
        out += _Q(value & _MASK64)
    elif isinstance(value, float):
        out += _D(value)
    elif isinstance(value, str):
        out += value.encode("utf-8", "replace") + b"\0"
    elif isinstance(value, (bytes, bytearray)):
        out += value
    elif isinstance(value, dict):
        for k, v in value.items():
            _pack(out, k)
            _pack(out, v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _pack(out, v)
    else:
        _pack(out, repr(value))


_PROCESS_ATTRS = ["pid", "ppid", "cpu_times", "memory_info", "num_ctx_switches", "create_time"]


def _process_table() -> list:
    # process_iter with an attrs list reads each /proc/PID once per attribute
    # group and skips processes that vanish; about 50 us a process here.
    table = []
    for proc in psutil.process_iter(_PROCESS_ATTRS, ad_value=None):
        info = proc.info
        table.append([info[a] for a in _PROCESS_ATTRS])
    return table


_SYSTEM_PROBES: list[tuple[str, Callable[[], object]]] = [
    ("cpu_times", lambda: psutil.cpu_times(percpu=True)),
    ("cpu_stats", lambda: psutil.cpu_stats()),
    ("cpu_freq", lambda: psutil.cpu_freq(percpu=True)),
    ("loadavg", lambda: os.getloadavg()),
    ("virtual_memory", lambda: psutil.virtual_memory()),
    ("swap_memory", lambda: psutil.swap_memory()),
    ("disk_io", lambda: psutil.disk_io_counters(perdisk=True)),
    ("net_io", lambda: psutil.net_io_counters(pernic=True)),
    ("processes", _process_table),
    ("boot_time", lambda: psutil.boot_time()),
    ("users", lambda: psutil.users()),
    ("temperatures", lambda: psutil.sensors_temperatures()),
    ("fans", lambda: psutil.sensors_fans()),
    ("battery", lambda: psutil.sensors_battery()),
]


class SystemSource(Source):
    """A snapshot of system statistics (psutil), each part time-stamped in nanoseconds.

    Credit: 1 bit per 64 bytes, at most 8 bits a sample.  Nearly everything in
    the snapshot can be read by any local user (it is what ps and /proc show),
    and much of it changes slowly; what an observer cannot reproduce exactly
    is the nanosecond at which each part was read and the counters' low-order
    digits at that instant.  That is worth a few bits, not kilobytes' worth:
    PRNGD credited statistics at a fraction of a bit per byte, and we cap the
    sample so a large process table does not inflate the claim.  At the
    default 17 s interval this is under half a bit a second.
    """

    kind = "system"

    def __init__(self, interval: float = 17.0, name: str = "system",
                 probes: Sequence[tuple[str, Callable[[], object]]] = tuple(_SYSTEM_PROBES)):
        super().__init__(name, interval, SYSTEM_CAP_BITS)
        self._probes = list(probes)
        self.missing: set[str] = set()  # probes this platform does not have

    def collect(self) -> Sample:
        out = bytearray()
        for name, probe in self._probes:
            if name in self.missing:
                continue
            out += _STAMP(time.perf_counter_ns(), time.time_ns())
            try:
                _pack(out, probe())
            except (AttributeError, NotImplementedError):
                self.missing.add(name)
            except Exception:  # containers hide /sys and /proc parts; a part failing is not a failure
                out.append(0xFE)
        out += _STAMP(time.perf_counter_ns(), time.time_ns())
        data = bytes(out)
        bits = min(self.cap_bits, len(data) / SYSTEM_BYTES_PER_BIT)
        return Sample(data, bits)


# ---- CPU timing jitter

def _fold(delta: int) -> int:
    """XOR-fold a time delta into one byte: keeps the variation wherever the timer's resolution puts it."""
    d = delta & _MASK64
    d ^= d >> 32
    d ^= d >> 16
    d ^= d >> 8
    return d & 0xFF


class JitterSource(Source):
    """Time deltas of a small CPU-bound loop, measured with perf_counter_ns.

    The loop's duration varies with caches, interrupts, frequency scaling and
    the other threads contending for the interpreter.  At the first collect,
    1024 deltas are measured (SP 800-90B's start-up test length) and their
    most-common-value estimate H, taken as at most 1 bit a delta, becomes the
    assessed entropy on which the health tests' cut-offs are computed; a
    timer too coarse to show any variation fails there.  Every sample then
    holds 512 deltas (one adaptive-proportion window), each folded to a byte
    symbol and run through both health tests.

    Credit: deltas * min(H of this sample, assessed H) / 16, at most 32 bits.
    The MCV estimate treats the deltas as independent, which they are not
    (they drift together with the machine's load and clock), hence the
    factor 16.  The cap is reached on an ordinary machine; the estimate
    matters where the timer is coarse and the credit must fall.
    """

    kind = "jitter"
    STARTUP = 1024
    DELTAS = 512
    MAX_H = 1.0  # bits a delta: the most we assess, and what the health tests then check
    MIN_H = 0.05  # below this the timer shows no usable variation
    DERATE = 16
    LOOP = 16

    def __init__(self, interval: float = 60.0, alpha_exp: int = 20, name: str = "jitter",
                 timer: Callable[[], int] = time.perf_counter_ns):
        super().__init__(name, interval, JITTER_CAP_BITS)
        self.alpha_exp = alpha_exp
        self._timer = timer
        self.health: HealthTests | None = None
        self.h_assessed: float | None = None
        self.h_last: float | None = None

    def _measure(self, n: int) -> list[int]:
        timer = self._timer
        deltas = [0] * n
        x = 0x9E3779B97F4A
        prev = timer()
        for i in range(n):
            for _ in range(self.LOOP):
                x = (x * 0x5DEECE66D + 11) & 0xFFFFFFFFFFFF
            now = timer()
            deltas[i] = now - prev
            prev = now
        return deltas

    def _startup(self) -> list[int]:
        deltas = self._measure(self.STARTUP)
        symbols = [_fold(d) for d in deltas]
        h = mcv_min_entropy(symbols)
        self.h_assessed = h
        if h < self.MIN_H:
            raise HealthTestFailure(f"start-up: timer shows no jitter (MCV estimate {h:.3f} bits a delta)")
        self.health = HealthTests(min(h, self.MAX_H), self.alpha_exp)
        self.health.feed(symbols)
        return deltas

    def collect(self) -> Sample:
        earlier = self._startup() if self.health is None else []
        deltas = self._measure(self.DELTAS)
        symbols = [_fold(d) for d in deltas]
        self.health.feed(symbols)
        self.h_last = mcv_min_entropy(symbols)
        h = min(self.h_last, self.health.h)
        bits = min(self.cap_bits, len(deltas) * h / self.DERATE)
        every = earlier + deltas
        data = struct.pack(f"<{len(every)}I", *(d & 0xFFFFFFFF for d in every))
        return Sample(data, bits)

    def stats(self) -> dict:
        extra = {"h_assessed": None if self.h_assessed is None else round(self.h_assessed, 4),
                 "h_last": None if self.h_last is None else round(self.h_last, 4)}
        if self.health is not None:
            extra["health"] = self.health.stats()
        return {**super().stats(), **extra}


# ---- external commands

# The environment commands run in: a fixed PATH and the C locale, nothing inherited.
_COMMAND_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class CommandSource(Source):
    """An external command's output, PRNGD's way: no shell, a timeout, an output cap.

    The command runs in its own session, so at the timeout (or when gather
    gives up on it) the whole process group is killed with SIGKILL, children
    included.  Its stdout is read up to `max_output` bytes; reaching the cap
    ends the run early and is not an error.  A non-zero exit or a timeout is a
    failure.  Credit: `rate` bits per byte of output as documented (PRNGD's
    code credits 8 times that; we do not), at most 16 bits a run, and nothing
    when the output is identical to the previous run's.

    `user` (a privileges.User) is whom it runs as, with no supplementary
    groups; None runs it as the daemon's own user.
    """

    kind = "command"

    def __init__(self, argv: Sequence[str], rate: float, name: str = "", interval: float = 49.0,
                 timeout: float = 25.0, max_output: int = 100_000, user: privileges.User | None = None):
        self.argv = tuple(argv)
        self.user = user
        self.rate = max(0.0, min(float(rate), 8.0))
        self.command_timeout = float(timeout)
        self.max_output = int(max_output)
        super().__init__(name or f"command:{os.path.basename(self.argv[0])}", interval, COMMAND_CAP_BITS,
                         timeout=self.command_timeout + COMMAND_GRACE)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _kill(self, proc: subprocess.Popen) -> None:
        # The child leads its own process group (start_new_session), and it is
        # not reaped yet, so its pid cannot have been reused: killing the group
        # reaches exactly the command and whatever it started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:  # a setuid command: kill what we may
            proc.kill()

    def abort(self) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.returncode is None:
                self._kill(proc)

    def collect(self) -> Sample:
        start = time.perf_counter_ns()
        deadline = time.monotonic() + self.command_timeout
        proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                                env=_COMMAND_ENV, **self._as_user())
        with self._lock:
            self._proc = proc
        log.debug("%s running %s (pid %d)", self.name, self.argv[0], proc.pid)
        out = bytearray()
        timed_out = truncated = False
        try:
            fd = proc.stdout.fileno()
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    if len(out) >= self.max_output:
                        truncated = True
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        break
                    if not sel.select(left):
                        continue
                    chunk = os.read(fd, min(65536, self.max_output - len(out)))
                    if not chunk:
                        break
                    out += chunk
            if not (timed_out or truncated):
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:  # closed its stdout but did not exit
                    timed_out = True
        finally:
            with self._lock:
                if proc.returncode is None:  # not reaped, so the group id is still ours
                    if timed_out or truncated or proc.poll() is None:
                        self._kill(proc)
            proc.stdout.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # stuck in the kernel; Popen reaps it later
                pass
            with self._lock:
                self._proc = None
        if timed_out:
            raise SourceError(f"timed out after {self.command_timeout:g} s; killed")
        if proc.returncode != 0 and not truncated:
            raise SourceError(f"exit status {proc.returncode}")
        output = bytes(out)
        bits = min(self.cap_bits, self.rate * len(output)) if self._changed(output) else 0.0
        return Sample(output + _STAMP(start, time.perf_counter_ns()), bits)

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}

    def stats(self) -> dict:
        return {**super().stats(), "argv": list(self.argv), "rate": self.rate}


# Used when no commands are configured: those present on this machine.  The
# rates (bits per byte of output) are OpenSSH's ssh_prng_cmds, which took
# PRNGD's list and lowered the figures; Linux spellings where they differ.
DEFAULT_COMMANDS: list[tuple[str, tuple[str, ...], float]] = [
    ("ps", ("ps", "laxww"), 0.003),
    ("netstat", ("netstat", "-an"), 0.005),
    ("ss", ("ss", "-an"), 0.005),
    ("netstat-in", ("netstat", "-in"), 0.010),
    ("vmstat", ("vmstat",), 0.010),
    ("df", ("df",), 0.010),
    ("w", ("w",), 0.005),
    ("last", ("last",), 0.001),
    ("ipcs", ("ipcs", "-a"), 0.001),
    ("uptime", ("uptime",), 0.001),
]


def default_commands() -> list[tuple[str, tuple[str, ...], float]]:
    """The default commands found on this machine, as (name, argv with full path, rate)."""
    found = []
    have_netstat = shutil.which("netstat", path=_COMMAND_ENV["PATH"]) is not None
    for name, argv, rate in DEFAULT_COMMANDS:
        if name == "ss" and have_netstat:
            continue  # one socket listing is enough
        path = shutil.which(argv[0], path=_COMMAND_ENV["PATH"])
        if path:
            found.append((name, (path, *argv[1:]), rate))
    return found


# ---- files and devices

class FileSource(Source):
    """Up to `max_bytes` of a file or device (not prngd.config.FileSource, which describes one).

    Opened non-blocking, so a device with nothing to give (a hardware RNG
    without a backend) fails the sample rather than holding a thread forever;
    a missing file is a failure like any other, backed off and eventually
    disabled.  Credit: `rate` bits per byte read, as configured, at most 8;
    nothing when the content is the same as last time.  A file claimed to
    carry at least 1 bit per byte is treated as a raw noise source: its bytes
    run through the health tests with H = rate.
    """

    kind = "file"
    WAIT = 2.0  # how long to wait for a device that has no data yet

    def __init__(self, path: str, rate: float, max_bytes: int = 4096, name: str = "",
                 interval: float = 60.0, alpha_exp: int = 20):
        self.path = path
        self.rate = max(0.0, min(float(rate), 8.0))
        self.max_bytes = max(1, int(max_bytes))
        super().__init__(name or f"file:{path}", interval, self.rate * self.max_bytes)
        self.health = HealthTests(self.rate, alpha_exp) if self.rate >= 1.0 else None

    def _read(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            out = bytearray()
            deadline = time.monotonic() + self.WAIT
            while len(out) < self.max_bytes:
                try:
                    chunk = os.read(fd, self.max_bytes - len(out))
                except BlockingIOError:
                    if out or time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)  # devices without poll(): short waits, bounded by WAIT
                    continue
                if not chunk:
                    break
                out += chunk
            return bytes(out)
        finally:
            os.close(fd)

    def collect(self) -> Sample:
        try:
            data = self._read()
        except (PermissionError, FileNotFoundError) as e:
            self._warn_denied(e)
            raise
        self._denied = None
        if not data:
            raise SourceError(f"{self.path}: nothing to read")
        if self.health is not None:
            self.health.feed(data)
        bits = min(self.cap_bits, self.rate * len(data)) if self._changed(data) else 0.0
        return Sample(data, bits)

    _denied: int | None = None  # the errno last warned about: one WARNING per cause, not one per retry

    def _warn_denied(self, e: OSError) -> None:
        """A file the daemon may not read (sandbox, permissions) is the operator's to fix: say so once."""
        if e.errno == self._denied:
            return
        self._denied = e.errno
        fix = f"give uid {os.geteuid()} (the daemon's user) read access to it and its directories"
        if self.path.startswith("/dev/"):
            fix = ("a device hidden by systemd's PrivateDevices=yes needs the drop-in prngd-hwrng.conf "
                   f"(examples/systemd); else {fix}")
        log.warning("source %s: cannot read %s: %s; %s. Retried with back-off, nothing credited meanwhile",
                    self.name, self.path, e.strerror, fix)

    def stats(self) -> dict:
        extra = {"path": self.path, "rate": self.rate}
        if self.health is not None:
            extra["health"] = self.health.stats()
        return {**super().stats(), **extra}


# ---- another EGD server

class UpstreamSource(Source):
    """`nbytes` from another EGD server (0x02) each sample: a VM guest's or a container's prngd
    drawing on its host's, over a Unix socket, TCP or vsock.

    Each fetch is bounded (UPSTREAM_TIMEOUT to connect and to be answered), so a
    dead upstream costs a failed sample, never a blocked daemon; it is reported
    once, retried with backoff and its recovery logged (`persistent`).  Credit:
    `rate` bits per byte as configured (default 0: mixed in, credited nothing, as
    the other server's output is a claim this one cannot check), nothing for a
    repeated reply.  The bytes run through the health tests at H = max(rate, 1):
    an upstream that turns constant is disabled.
    """

    kind = "upstream"
    persistent = True
    TIMEOUT = 5.0

    def __init__(self, address: str, nbytes: int = 32, interval: float = 60.0, rate: float = 0.0,
                 name: str = "", alpha_exp: int = 20):
        self.address = address
        self.nbytes = max(1, int(nbytes))
        self.rate = max(0.0, min(float(rate), 8.0))
        super().__init__(name or f"upstream:{address}", interval, self.rate * self.nbytes,
                         timeout=2 * self.TIMEOUT + 1)  # connect, then one round of requests
        self.max_backoff = min(4 * self.interval, MAX_BACKOFF)
        self.health = HealthTests(max(self.rate, 1.0), alpha_exp)
        self.bytes = 0

    def collect(self) -> Sample:
        try:
            with EGDClient(self.address, timeout=self.TIMEOUT) as upstream:
                data = upstream.read(self.nbytes)
        except EGDError as e:
            raise SourceError(str(e)) from None
        self.health.feed(data)
        self.bytes += len(data)
        bits = min(self.cap_bits, self.rate * len(data)) if self._changed(data) else 0.0
        return Sample(data, bits)

    def stats(self) -> dict:
        return {**super().stats(), "address": self.address, "bytes": self.bytes, "bytes_per_sample": self.nbytes,
                "credit_bits_per_byte": self.rate, "health": self.health.stats()}


def _cannot_run(path: str) -> str | None:
    """Why `path` cannot be executed, or None."""
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isdir(path):
        return "is a directory"
    if not os.access(path, os.X_OK):
        return "is not executable"
    return None


def _identity(source: Source) -> tuple:
    """What makes a source the same one across a reload: its kind, name and what it reads or runs."""
    return (type(source), source.name, getattr(source, "path", None), tuple(getattr(source, "argv", ())))


def _carry_totals(previous: Sequence[Source], sources: Sequence[Source]) -> None:
    """A source that survives a reload keeps its totals (status must not say "0 samples" after SIGHUP).

    Its failure streak and disabled state start afresh: a reload is how an
    operator says "try again".  The last sample's digest goes along too, so a
    repeat after the reload is still not credited.
    """
    old = {_identity(s): s for s in previous}
    for s in sources:
        before = old.get(_identity(s))
        if before is None:
            continue
        s.samples, s.credited_bits, s.failures = before.samples, before.credited_bits, before.failures
        s._last_digest = before._last_digest
        if isinstance(s, KernelSource):
            s.ready = before.ready


def build_sources(settings, previous: Sequence[Source] = ()) -> list[Source]:
    """The sources a prngd.config.Settings asks for, in the order they are first sampled.

    Commands are those of [commands], or the built-in set found on this
    machine when none are listed, or none at all with external_commands off.
    Those also in `previous` (the sources before a reload) keep their totals.
    """
    sources: list[Source] = []
    if settings.kernel:
        sources.append(KernelSource(settings.kernel_bytes, settings.kernel_interval))
    if settings.system:
        sources.append(SystemSource(settings.system_interval))
    if settings.jitter:
        sources.append(JitterSource(settings.jitter_interval, settings.jitter_alpha_exp))
    if not getattr(settings, "external_commands", True):
        commands = []
    elif settings.commands:
        commands = [(c.name or os.path.basename(c.argv[0]), c.argv, c.rate) for c in settings.commands]
    else:
        commands = default_commands()
    # Commands never run as root: as the daemon's user once it has dropped
    # privileges (-u), as nobody while it stays root.
    run_as = privileges.command_user() if commands else None
    if run_as is False:
        log.warning("not running the %d entropy commands: prngd runs as root and there is no user %r to run "
                    "them as (use -u USER)", len(commands), privileges.NOBODY)
        commands = []
    for name, argv, rate in commands:
        problem = _cannot_run(argv[0])
        if problem:
            log.warning("command %s: %s %s; not run", name, argv[0], problem)
            continue
        sources.append(CommandSource(argv, rate, f"command:{name}", settings.command_interval,
                                     settings.command_timeout, settings.command_max_output, user=run_as or None))
    for f in settings.files:
        sources.append(FileSource(f.path, f.rate, f.max_bytes, f"file:{f.name or f.path}",
                                  settings.file_interval, settings.jitter_alpha_exp))
    up = getattr(settings, "upstream", None)
    if up is not None:
        sources.append(UpstreamSource(up.socket, up.nbytes, up.interval, up.credit_bits_per_byte,
                                      alpha_exp=settings.jitter_alpha_exp))
    seen: dict[str, int] = {}
    for s in sources:  # names key the pool's accounting and the status output: keep them unique
        n = seen.get(s.name, 0) + 1
        seen[s.name] = n
        if n > 1:
            s.name = f"{s.name}#{n}"
    _carry_totals(previous, sources)
    return sources
