"""Entropy sources one by one, and the gatherer that runs them (against a fake pool).

Gatherer tests run on trio's MockClock, so minutes of backoff take no real
time.  Its autojump threshold is not zero: gather waits for worker threads,
and a clock that jumped the moment the loop idled would time every collect
out before its thread had run.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import shutil
import stat
import struct
import threading
import time
from pathlib import Path

import psutil
import pytest
import trio
import trio.testing

from conftest import gone
from prngd import health, kernel, sources
from prngd.config import Command, FileSource as FileSpec, Settings
from prngd.gather import Sample, Source, SourceError, gather
from prngd.health import HealthTestFailure
from prngd.kernel import kernel_ready, seed_from_kernel
from prngd.sources import CommandSource, FileSource, JitterSource, KernelSource, SystemSource, build_sources


# ---------------------------------------------------------------- helpers

class FakePool:
    """Records add() calls; entropy_bits is whatever the test sets."""

    def __init__(self, entropy_bits: int = 1 << 20):
        self.calls: list[tuple[str, bytes, float]] = []
        self.entropy_bits = entropy_bits
        self.seeded = True

    def add(self, source: str, data: bytes, bits: float) -> None:
        self.calls.append((source, bytes(data), bits))


class FakeSource(Source):
    """collect() runs `behaviour` and notes the (virtual) time it was called at."""

    def __init__(self, behaviour, name="fake", interval=10.0, cap_bits=16.0, kind="fake", timeout=10.0):
        super().__init__(name, interval, cap_bits, timeout)
        self.kind = kind
        self.behaviour = behaviour
        self.times: list[float] = []

    def collect(self) -> Sample:
        self.times.append(trio.from_thread.run_sync(trio.current_time))
        return self.behaviour()


class LogWatcher(logging.Handler):
    """Collects the sources' and the gatherer's records; a trio task can await one matching a predicate."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()
        self._waiters: list = []

    def emit(self, record):
        with self._lock:
            self.records.append(record)
            for waiter in list(self._waiters):
                if waiter[0](record):
                    self._waiters.remove(waiter)
                    waiter[1]()

    async def wait_for(self, predicate) -> logging.LogRecord:
        event = trio.Event()
        token = trio.lowlevel.current_trio_token()
        found: list = []
        with self._lock:
            found = [r for r in self.records if predicate(r)]
            if not found:
                self._waiters.append((predicate, lambda: token.run_sync_soon(event.set)))
        if not found:
            await event.wait()
            found = [r for r in self.records if predicate(r)]
        return found[0]

    def messages(self, level=logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def watcher():
    logger = logging.getLogger("prngd")  # prngd.sources and prngd.gather
    w = LogWatcher()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(w)
    yield w
    logger.removeHandler(w)
    logger.setLevel(old)


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0.05)


def settings(**kw) -> Settings:
    base = dict(low_water_bits=0, command_interval=49.0)
    base.update(kw)
    return Settings(**base)


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# ---------------------------------------------------------------- every source on this machine

def _machine_sources() -> list[Source]:
    files = [FileSpec("/proc/interrupts", 0.01, 4096, "interrupts"),
             FileSpec("/proc/diskstats", 0.01, 4096, "diskstats")]
    if os.access("/dev/hwrng", os.R_OK):
        files.append(FileSpec("/dev/hwrng", 4.0, 64, "hwrng"))
    return build_sources(Settings(files=files))


MACHINE_SOURCES = _machine_sources()


@pytest.mark.parametrize("source", MACHINE_SOURCES, ids=[s.name for s in MACHINE_SOURCES])
def test_each_source_yields_data_within_its_cap(source):
    for _ in range(2):
        sample = source.collect()
        assert isinstance(sample, Sample)
        assert len(sample.data) > 0
        assert 0 <= sample.bits <= source.cap_bits
        assert sample.bits <= 8 * len(sample.data)
    json.dumps(source.stats())


def test_machine_has_every_kind():
    kinds = {s.kind for s in MACHINE_SOURCES}
    assert {"kernel", "system", "jitter", "command", "file"} <= kinds


# ---------------------------------------------------------------- kernel

def test_kernel_ready_follows_getrandom(monkeypatch):
    assert kernel_ready() is True  # a booted Linux machine running tests

    def not_yet(n, flags=0):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "getrandom", not_yet)
    assert kernel_ready() is False


def test_kernel_source_credits_only_when_ready(monkeypatch):
    src = KernelSource(48)
    s = src.collect()
    assert len(s.data) == 48 and s.bits == 8 * 48 == src.cap_bits
    monkeypatch.setattr(sources, "kernel_ready", lambda: False)
    s = src.collect()
    assert len(s.data) == 48 and s.bits == 0
    assert src.stats()["kernel_ready"] is False


def test_seed_from_kernel(monkeypatch):
    pool = FakePool()
    assert seed_from_kernel(pool, 32) == (True, 256.0)
    assert [(n, len(d), b) for n, d, b in pool.calls] == [("kernel", 32, 256.0)]
    monkeypatch.setattr(kernel, "kernel_ready", lambda: False)
    assert seed_from_kernel(pool, 16) == (False, 0.0)
    assert [(n, len(d), b) for n, d, b in pool.calls[1:]] == [("kernel", 16, 0.0)]


def test_the_start_seed_is_booked_as_the_kernel_sources_first_sample():
    src = KernelSource(32)
    src.book(True, 256.0)
    assert src.stats()["samples"] == 1 and src.stats()["credited_bits"] == 256.0 and src.ready


# ---------------------------------------------------------------- system

def test_system_snapshot_holds_the_process_table_and_is_cheap():
    src = SystemSource()
    src.collect()  # the first walk builds psutil's process cache
    t0 = time.thread_time()
    s = src.collect()
    cpu = time.thread_time() - t0
    assert struct.pack("<Q", os.getpid()) in s.data
    assert s.bits == min(sources.SYSTEM_CAP_BITS, len(s.data) / 64)
    # 17 s apart, this must stay far below 1% of a core (0.17 s would be 1%).  The
    # process table dominates: about 50 us a process here; allow ten times that.
    budget = 0.02 + 0.0005 * len(psutil.pids())
    assert cpu < budget, f"one system snapshot took {cpu * 1000:.1f} ms of CPU"


def test_system_probes_that_fail_do_not_fail_the_sample():
    calls = []

    def boom():
        calls.append("boom")
        raise OSError("no /sys in this container")

    def missing():
        calls.append("missing")
        return psutil.no_such_function()  # AttributeError: not on this platform

    src = SystemSource(probes=[("boom", boom), ("missing", missing), ("fine", lambda: (1, 2.5, "x"))])
    a, b = src.collect(), src.collect()
    assert calls == ["boom", "missing", "boom"]  # a missing probe is not asked again
    assert src.missing == {"missing"}
    for s in (a, b):
        assert s.bits == min(8.0, len(s.data) / 64)
        assert struct.pack("<Q", 1) + struct.pack("<d", 2.5) + b"x\0" in s.data


# ---------------------------------------------------------------- jitter

def fake_timer(deltas):
    """A perf_counter_ns stand-in whose successive differences are `deltas` (an iterable)."""
    now = [10 ** 9]

    def timer():
        value = now[0]
        now[0] += next(deltas)
        return value

    return timer


def test_jitter_on_this_machine():
    src = JitterSource(alpha_exp=20)
    s = src.collect()
    assert src.h_assessed > JitterSource.MIN_H
    assert src.health.h == min(src.h_assessed, 1.0)
    assert src.health.rct.cutoff == health.rct_cutoff(src.health.h, 2.0 ** -20)
    assert 0 < s.bits <= 32
    assert len(s.data) == 4 * (JitterSource.STARTUP + JitterSource.DELTAS)
    assert len(src.collect().data) == 4 * JitterSource.DELTAS


def test_jitter_stuck_timer_fails_at_startup():
    src = JitterSource(timer=fake_timer(itertools.repeat(1000)))
    with pytest.raises(HealthTestFailure, match="no jitter"):
        src.collect()


def test_jitter_timer_that_gets_stuck_trips_the_rct():
    rng = random.Random(7)
    good = (rng.randrange(1000, 5000) for _ in range(JitterSource.STARTUP + 1))
    src = JitterSource(timer=fake_timer(itertools.chain(good, itertools.repeat(1234))))
    with pytest.raises(HealthTestFailure, match=r"repetition count test: 21 identical"):
        src.collect()
    assert src.health.failed and src.health.h == 1.0


def test_jitter_coarse_timer_earns_little():
    rng = random.Random(3)
    # 90% of deltas identical: the MCV estimate is about 0.1 bit a delta.
    coarse = (1000 if rng.random() < 0.9 else 2000 for _ in itertools.count())
    src = JitterSource(timer=fake_timer(coarse))
    s = src.collect()
    assert 0.05 < src.h_assessed < 0.2
    assert 0 < s.bits < 8


# ---------------------------------------------------------------- commands

def test_command_output_is_credited_at_its_rate():
    src = CommandSource(("/bin/echo", "hello"), 0.5, "command:echo", timeout=5)
    s = src.collect()
    assert s.data.startswith(b"hello\n") and len(s.data) == 6 + 16
    assert s.bits == 3.0
    assert src.collect().bits == 0.0  # the same output again earns nothing
    big = CommandSource(("/bin/echo", "x" * 1000), 1.0, timeout=5)
    assert big.collect().bits == sources.COMMAND_CAP_BITS


def test_command_failures(tmp_path):
    with pytest.raises(SourceError, match="exit status 1"):
        CommandSource((shutil.which("false"),), 0.1, timeout=5).collect()
    with pytest.raises(FileNotFoundError):
        CommandSource((str(tmp_path / "nonexistent"),), 0.1, timeout=5).collect()


def test_hanging_command_is_killed_at_its_timeout(tmp_path):
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang.sh", f"sleep 1000 &\necho $$ $! > {pids}\nwait\n")
    src = CommandSource((hang,), 1.0, "command:hang", timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="timed out after 0.5 s; killed"):
        src.collect()
    assert time.monotonic() - t0 < 3.0
    shell, sleeper = (int(p) for p in pids.read_text().split())
    assert not psutil.pid_exists(shell)  # killed and reaped: no zombie left behind
    assert not psutil.pid_exists(sleeper) or gone([psutil.Process(sleeper)])  # its child too


def test_command_that_closes_stdout_but_keeps_running_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    lurk = script(tmp_path, "lurk.sh", f"echo hi\nexec >&-\necho $$ > {pidfile}\nexec sleep 1000\n")
    src = CommandSource((lurk,), 1.0, timeout=0.5)
    with pytest.raises(SourceError, match="timed out"):
        src.collect()
    assert not psutil.pid_exists(int(pidfile.read_text()))


def test_command_output_is_capped():
    src = CommandSource((shutil.which("yes"),), 0.01, timeout=10, max_output=1000)
    t0 = time.monotonic()
    s = src.collect()
    assert time.monotonic() - t0 < 5
    assert len(s.data) == 1000 + 16 and s.data[:4] == b"y\ny\n"
    assert s.bits == 10.0


def test_default_commands_exist():
    found = sources.default_commands()
    assert found, "no default command found on this machine"
    for name, argv, rate in found:
        assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
        assert 0 < rate <= 0.01
    assert not ({"netstat", "ss"} <= {n for n, _, _ in found})


# ---------------------------------------------------------------- files

def test_file_source_reads_with_a_cap(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(os.urandom(10000))
    src = FileSource(str(f), 0.5, max_bytes=100)
    s = src.collect()
    assert len(s.data) == 100 and s.bits == 50.0 == src.cap_bits
    assert src.collect().bits == 0.0  # unchanged content
    f.write_bytes(os.urandom(10000))
    assert src.collect().bits == 50.0


def test_proc_interrupts():
    src = FileSource("/proc/interrupts", 0.01, 4096)
    s = src.collect()
    assert 0 < len(s.data) <= 4096 and s.bits == pytest.approx(0.01 * len(s.data))


def test_missing_and_empty_files_fail(tmp_path):
    with pytest.raises(FileNotFoundError):
        FileSource(str(tmp_path / "missing"), 0.1).collect()
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SourceError, match="nothing to read"):
        FileSource(str(tmp_path / "empty"), 0.1).collect()


def test_claimed_noise_device_is_health_tested(tmp_path):
    stuck = tmp_path / "stuck-rng"
    stuck.write_bytes(bytes(64))
    src = FileSource(str(stuck), 8.0, 64)
    assert src.health is not None and src.health.rct.cutoff == 4
    with pytest.raises(HealthTestFailure, match="repetition count"):
        src.collect()
    assert FileSource("/proc/interrupts", 0.01).health is None  # text is not claimed to be noise


# ---------------------------------------------------------------- build_sources

def test_build_sources_honours_settings():
    s = Settings(kernel=False, system=False, jitter=False, command_interval=7.0, command_timeout=3.0,
                 commands=[Command(("/bin/echo", "a"), 0.1, "echo"), Command(("/bin/echo", "b"), 0.1, "echo")],
                 files=[FileSpec("/proc/interrupts", 0.01, 512, "irq")], file_interval=11.0)
    built = build_sources(s)
    assert [x.name for x in built] == ["command:echo", "command:echo#2", "file:irq"]
    cmd = built[0]
    assert (cmd.interval, cmd.command_timeout, cmd.argv) == (7.0, 3.0, ("/bin/echo", "a"))
    assert built[2].interval == 11.0 and built[2].max_bytes == 512


def test_build_sources_without_external_commands():
    s = Settings(jitter=False, external_commands=False, commands=[Command(("/bin/echo", "a"), 0.1, "echo")])
    assert [x.name for x in build_sources(s)] == ["kernel", "system"]
    assert [x.name for x in build_sources(Settings(system=False, jitter=False, kernel=False,
                                                   external_commands=False))] == []


def test_build_sources_defaults():
    built = build_sources(Settings())
    names = [x.name for x in built]
    assert names[:3] == ["kernel", "system", "jitter"]
    assert any(n.startswith("command:") for n in names)
    for x in built:
        st = x.stats()
        assert {"name", "kind", "enabled", "healthy", "samples", "credited_bits", "failures", "last_error"} <= set(st)
        json.dumps(st)


# ---------------------------------------------------------------- gather

async def test_gather_credits_within_caps_and_logs_each_sample(clock, watcher):
    pool = FakePool()
    big = FakeSource(lambda: Sample(b"x" * 100, 1000.0), name="big", cap_bits=16)
    short = FakeSource(lambda: Sample(b"xy", 100.0), name="short", cap_bits=1000)
    negative = FakeSource(lambda: Sample(b"z" * 10, -5.0), name="negative")
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, pool, [big, short, negative], settings())
        await watcher.wait_for(lambda r: "negative:" in r.getMessage())
        await watcher.wait_for(lambda r: "big:" in r.getMessage())
        await watcher.wait_for(lambda r: "short:" in r.getMessage())
        nursery.cancel_scope.cancel()
    assert sorted((n, len(d), b) for n, d, b in pool.calls) == [("big", 100, 16.0), ("negative", 10, 0.0),
                                                                ("short", 2, 16.0)]
    assert "big: 100 bytes, 16.00 bits credited" in watcher.messages()
    assert big.stats()["samples"] == 1 and big.stats()["credited_bits"] == 16.0


async def test_gather_starts_at_once_without_waiting_for_samples(clock):
    release = threading.Event()
    slow = FakeSource(lambda: (release.wait(10), Sample(b"s", 1))[1], name="slow")
    pool = FakePool()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gather, pool, [slow], settings())
            assert pool.calls == []  # started() came before any sample
            nursery.cancel_scope.cancel()
    finally:
        release.set()


async def test_failing_source_is_disabled_after_five_failures_and_logged_once(clock, watcher):
    def boom():
        raise RuntimeError("boom")

    src = FakeSource(boom, name="flaky", interval=10.0)
    pool = FakePool()
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, pool, [src], settings())
        await watcher.wait_for(lambda r: r.levelno == logging.WARNING)
        await trio.sleep(100_000)  # long after: no more attempts, no more warnings
        nursery.cancel_scope.cancel()
    assert pool.calls == []
    # once at start, then backing off exponentially: 2, 4, 8, 16 intervals
    assert src.times == [0.0, 20.0, 60.0, 140.0, 300.0]
    warnings = [m for m in watcher.messages(logging.WARNING)]
    assert len(warnings) == 1 and "flaky" in warnings[0] and "5 failures" in warnings[0]
    st = src.stats()
    assert st["enabled"] is False and st["healthy"] is True
    assert st["failures"] == 5 and st["last_error"] == "RuntimeError: boom"


async def test_a_success_resets_the_failure_streak(clock, watcher):
    outcomes = iter([False, False, False, False, True] + [False] * 4 + [True] * 100)

    def sometimes():
        if next(outcomes):
            return Sample(b"ok", 1)
        raise OSError("transient")

    src = FakeSource(sometimes, name="sometimes", interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, FakePool(), [src], settings())
        await trio.sleep(62)  # 4 failures (0, 2, 6, 14), a sample (30), 4 failures (31-45), a sample (61)
        nursery.cancel_scope.cancel()
    assert not src.disabled and src.failures == 8 and src.consecutive_failures == 0
    assert watcher.messages(logging.WARNING) == []


async def test_slow_source_times_out_without_delaying_others(clock, watcher):
    release = threading.Event()
    slow = FakeSource(lambda: (release.wait(30), Sample(b"late", 1))[1], name="slow", interval=100, timeout=5)
    fast = FakeSource(lambda: Sample(b"fast", 1), name="fast", interval=1.0)
    pool = FakePool()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gather, pool, [slow, fast], settings())
            await watcher.wait_for(lambda r: "slow failed" in r.getMessage())
            nursery.cancel_scope.cancel()
    finally:
        release.set()
    assert slow.last_error == "no sample within 5 s" and slow.failures == 1
    assert fast.samples >= 5  # one a second all the while
    assert all(name == "fast" for name, _, _ in pool.calls)


async def test_low_water_samples_four_times_as_often(clock):
    for entropy, expected in ((0, [0.0, 10.0, 20.0, 30.0]), (1 << 20, [0.0, 40.0, 80.0, 120.0])):
        pool = FakePool(entropy_bits=entropy)
        src = FakeSource(lambda: Sample(b"x", 1), interval=40.0)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(gather, pool, [src], settings(low_water_bits=1024))
            await trio.sleep(expected[-1] + 1)
            nursery.cancel_scope.cancel()
        assert [t - start for t in src.times] == expected, entropy


async def test_pool_dropping_below_low_water_hurries_the_next_sample(clock):
    pool = FakePool(entropy_bits=4096)
    src = FakeSource(lambda: Sample(b"x", 1), interval=40.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, pool, [src], settings(low_water_bits=1024))
        await trio.sleep(15)
        pool.entropy_bits = 0  # drained between two samples
        await trio.sleep(25.5)  # not 25: a tie at 40 with the sample would be a race
        nursery.cancel_scope.cancel()
    assert src.times == [0.0, 20.0, 30.0, 40.0]


async def test_health_failure_disables_at_once(clock, watcher):
    src = JitterSource(timer=fake_timer(itertools.repeat(1000)), interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, FakePool(), [src], settings())
        await watcher.wait_for(lambda r: r.levelno == logging.WARNING)
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    st = src.stats()
    assert st["enabled"] is False and st["healthy"] is False and "health" in st["last_error"]
    assert len(watcher.messages(logging.WARNING)) == 1


async def test_missing_file_backs_off_then_is_disabled(clock, tmp_path, watcher):
    src = FileSource(str(tmp_path / "not-there"), 0.1, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, FakePool(), [src], settings())
        await watcher.wait_for(lambda r: r.levelno == logging.WARNING and "disabled" in r.getMessage())
        nursery.cancel_scope.cancel()
    assert src.failures == 5 and src.disabled and "FileNotFoundError" in src.last_error
    # The cause was said once, at the first failure, not at every retry.
    assert [r.getMessage() for r in watcher.records if "cannot read" in r.getMessage()] == [
        f"source {src.name}: cannot read {src.path}: No such file or directory; give uid {os.geteuid()} (the "
        "daemon's user) read access to it and its directories. Retried with back-off, nothing credited meanwhile"]
    assert trio.current_time() == 0 + 2 + 4 + 8 + 16  # once at start, then backing off


async def test_commands_take_turns(clock):
    order: list[str] = []

    def run(name):
        def collect():
            order.append(name)
            return Sample(name.encode(), 0.1)
        return collect

    cmds = [FakeSource(run(n), name=n, kind="command", interval=49.0) for n in "abc"]
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, FakePool(), cmds, settings(command_interval=49.0))
        await trio.sleep(49 * 4 + 1)
        nursery.cancel_scope.cancel()
    assert order == ["a", "b", "c", "a", "b", "c", "a"]
    assert [c.times for c in cmds] == [[0.0, 49.0, 196.0], [0.0, 98.0], [0.0, 147.0]]


async def test_kernel_source_waits_an_interval_after_seed_from_kernel(clock, watcher):
    pool = FakePool(entropy_bits=4096)
    src = KernelSource(32, interval=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, pool, [src], settings(low_water_bits=1024))
        await trio.sleep(59)
        assert pool.calls == []  # seed_from_kernel was its sample at start
        await watcher.wait_for(lambda r: r.getMessage().startswith("kernel: 32 bytes"))
        assert trio.current_time() == 60.0
        pool.entropy_bits = 0
        await trio.sleep(15.5)  # below low water: a quarter interval
        nursery.cancel_scope.cancel()
    assert [(n, len(d), b) for n, d, b in pool.calls] == [("kernel", 32, 256.0)] * 2


async def test_gather_without_sources_runs_until_cancelled(clock):
    with trio.move_on_after(1000) as scope:
        await gather(FakePool(), [], settings())
    assert scope.cancelled_caught


async def test_cancelling_gather_kills_the_running_command(tmp_path, watcher):
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    hang = script(tmp_path, "hang.sh", f"sleep 1000 &\necho $$ $! > {fifo}\nwait\n")
    src = CommandSource((hang,), 1.0, "command:hang", timeout=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(gather, FakePool(), [src], settings())
        with trio.fail_after(10):
            text = await trio.to_thread.run_sync(fifo.read_text, abandon_on_cancel=True)
        procs = [psutil.Process(int(p)) for p in text.split()]
        assert all(p.is_running() for p in procs)
        nursery.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(gone, procs)


def test_an_unreadable_file_source_is_a_warning_naming_the_path_and_the_fix(start_daemon, open_dir):
    """Issue 19: a device hidden by PrivateDevices=yes (ENOENT) or denied (EACCES) was logged only at DEBUG."""
    quiet = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"
    secret = open_dir / "secret"
    secret.write_bytes(os.urandom(64))
    os.chmod(secret, 0o600)
    args = ("-u", "nobody") if os.geteuid() == 0 else ()
    (open_dir / "c.conf").write_text(quiet + f"[files]\nhw = 4 64 /dev/prngd-test-no-such-rng\nsecret = 0.5 64 {secret}\n")
    d = start_daemon(*args, "-c", str(open_dir / "c.conf"), socket=str(open_dir / "s"))
    line = d.wait_for_line("cannot read /dev/prngd-test-no-such-rng")
    assert " WARNING: source file:hw: cannot read /dev/prngd-test-no-such-rng: No such file or directory; " in line
    assert "drop-in prngd-hwrng.conf" in line
    if os.geteuid() == 0:  # as nobody, root's 0600 file is denied
        line = d.wait_for_line(f"cannot read {secret}")
        assert f" WARNING: source file:secret: cannot read {secret}: Permission denied; give uid " in line
    assert d.stop() == 0
    assert "Traceback" not in d.log()
