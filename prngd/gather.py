"""The gathering schedule: what a source is to the gatherer, and the trio task that runs them all.

A source (a `Source` subclass, see prngd.sources) collects one `Sample` at
a time in a blocking call; `gather()` runs each as a trio task: once at
start (the kernel's start sample is `seed_from_kernel()`, taken before
serving), then every `interval` seconds (a quarter of that while the pool is
below `low_water_bits`), each collect in a worker thread under a timeout,
failures backed off exponentially.  External commands take turns, one per
`command_interval`, as PRNGD runs them.

A source whose health test fails (HealthTestFailure) is disabled at once; a
source that keeps failing is disabled after MAX_CONSECUTIVE_FAILURES
attempts.  Either is logged once, at WARNING, and shows in `Source.stats()`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Sequence

import trio

from prngd.health import HealthTestFailure

log = logging.getLogger("prngd.gather")

# A source that raised this many times in a row is given up on (until SIGHUP).
MAX_CONSECUTIVE_FAILURES = 5
# Exponential backoff after a failure: interval * 2**failures, at most this long.
MAX_BACKOFF = 3600.0
# How long a collect may take before gather abandons it (commands set their own).
COLLECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One collected sample and the entropy its source credits it with (already capped)."""

    data: bytes
    bits: float


class SourceError(Exception):
    """A sample could not be collected; gather backs off and retries."""


class Source:
    """One way to collect entropy.  Subclasses implement `collect()`; gather keeps the books."""

    kind = "source"
    sample_at_start = True  # gather samples it as soon as it starts
    # A persistent source (another server, which may come back) is never given up
    # on for failing: its first failure is logged, then retried, its recovery logged.
    persistent = False
    max_backoff = MAX_BACKOFF

    def __init__(self, name: str, interval: float, cap_bits: float, timeout: float = COLLECT_TIMEOUT):
        self.name = name
        self.interval = float(interval)
        self.cap_bits = float(cap_bits)
        self.timeout = float(timeout)
        self.disabled = False
        self.healthy = True
        self.disabled_reason: str | None = None
        self.samples = 0
        self.credited_bits = 0.0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._last_digest: bytes | None = None

    def collect(self) -> Sample:
        """Collect one sample (blocking; runs in a worker thread; may raise)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop a collect that gather has given up on (a no-op unless the source runs a process)."""

    def _changed(self, payload: bytes) -> bool:
        """Whether `payload` differs from the previous one: a repeat is mixed in but never credited."""
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        changed = digest != self._last_digest
        self._last_digest = digest
        return changed

    def stats(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "enabled": not self.disabled,
            "healthy": self.healthy,
            "samples": self.samples,
            "credited_bits": round(self.credited_bits, 3),
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "disabled_reason": self.disabled_reason,
            "interval": self.interval,
            "cap_bits": self.cap_bits,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------- gathering


def _backoff(source: Source) -> float:
    return min(source.interval * 2.0 ** source.consecutive_failures, max(source.interval, source.max_backoff))


def _disable(source: Source, reason: str, healthy: bool = True) -> None:
    if source.disabled:
        return
    source.disabled = True
    source.disabled_reason = reason
    if not healthy:
        source.healthy = False
    log.warning("source %s disabled: %s", source.name, reason)


def _failed(source: Source, error: str) -> None:
    source.failures += 1
    source.consecutive_failures += 1
    source.last_error = error
    if source.persistent:
        if source.consecutive_failures == 1:
            log.warning("source %s failing: %s; retrying, at most every %g s", source.name, error,
                        max(source.interval, source.max_backoff))
        else:
            log.debug("source %s failed again (%s)", source.name, error)
    elif source.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
        _disable(source, f"{source.consecutive_failures} failures in a row, the last: {error}")
    else:
        log.debug("source %s failed (%s); next try in %.0f s", source.name, error, _backoff(source))


async def _collect_once(pool, source: Source, limiter: trio.CapacityLimiter) -> bool:
    """Collect one sample in a worker thread and add it to the pool; False if it failed."""
    sample = None
    try:
        with trio.move_on_after(source.timeout):
            sample = await trio.to_thread.run_sync(source.collect, abandon_on_cancel=True, limiter=limiter)
    except HealthTestFailure as exc:
        source.last_error = f"health test: {exc}"
        _disable(source, f"health test failed: {exc}", healthy=False)
        return False
    except Exception as exc:
        _failed(source, f"{type(exc).__name__}: {exc}" if not isinstance(exc, SourceError) else str(exc))
        return False
    finally:
        if sample is None:  # timed out, failed or cancelled: make sure no command outlives it
            source.abort()
    if sample is None:
        _failed(source, f"no sample within {source.timeout:g} s")
        return False
    bits = max(0.0, min(float(sample.bits), source.cap_bits, 8.0 * len(sample.data)))
    pool.add(source.name, sample.data, bits)
    source.samples += 1
    source.credited_bits += bits
    if source.persistent and source.consecutive_failures:
        log.info("source %s recovered after %d failures", source.name, source.consecutive_failures)
    source.consecutive_failures = 0
    log.debug("%s: %d bytes, %.2f bits credited", source.name, len(sample.data), bits)
    return True


def _low(pool, low_water: int) -> bool:
    return pool.entropy_bits < low_water


async def _wait(pool, delay: float, low_water: int, hurry: bool) -> None:
    """Sleep `delay` seconds; if `hurry`, stop at a quarter boundary while the pool is below low water."""
    start = trio.current_time()
    if not hurry:
        await trio.sleep_until(start + delay)
        return
    for quarter in (1, 2, 3):
        await trio.sleep_until(start + delay * quarter / 4)
        if _low(pool, low_water):
            return
    await trio.sleep_until(start + delay)


async def _run_source(pool, source: Source, low_water: int) -> None:
    limiter = trio.CapacityLimiter(1)  # one collect at a time; an abandoned one keeps its token
    if not source.sample_at_start:
        await _wait(pool, source.interval, low_water, hurry=True)
    while not source.disabled:
        ok = await _collect_once(pool, source, limiter)
        if source.disabled:
            return
        await _wait(pool, source.interval if ok else _backoff(source), low_water, hurry=ok)


async def _run_commands(pool, commands: list[Source], interval: float, low_water: int) -> None:
    """PRNGD's way with commands: one at a time, in turn, one every `interval` seconds."""
    limiters = {id(c): trio.CapacityLimiter(1) for c in commands}
    retry_at = {id(c): 0.0 for c in commands}

    async def run(cmd: Source) -> None:
        if not await _collect_once(pool, cmd, limiters[id(cmd)]):
            retry_at[id(cmd)] = trio.current_time() + _backoff(cmd)

    for cmd in commands:  # each once at start, still one at a time
        await run(cmd)
    turn = 0
    while True:
        await _wait(pool, interval, low_water, hurry=True)
        live = [c for c in commands if not c.disabled]
        if not live:
            return
        now = trio.current_time()
        for _ in range(len(commands)):
            cmd = commands[turn % len(commands)]
            turn += 1
            if not cmd.disabled and retry_at[id(cmd)] <= now:
                await run(cmd)
                break


async def gather(pool, sources: Sequence[Source], settings, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Feed `pool` from `sources` until cancelled.  Nothing here blocks the trio thread.

    Every source is sampled once at start (the kernel's start sample is
    seed_from_kernel's) and then on its interval; commands take turns.  Exceptions from sources are logged and counted, never raised.
    """
    low_water = settings.low_water_bits
    commands = [s for s in sources if s.kind == "command"]
    others = [s for s in sources if s.kind != "command"]
    task_status.started()
    async with trio.open_nursery() as nursery:
        for source in others:
            nursery.start_soon(_run_source, pool, source, low_water, name=f"gather:{source.name}")
        if commands:
            nursery.start_soon(_run_commands, pool, commands, settings.command_interval, low_water,
                               name="gather:commands")
    await trio.sleep_forever()  # every source is disabled; stay until cancelled, as the server expects
