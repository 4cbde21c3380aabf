"""Throughput of Pool.read() for both generators, next to os.urandom.

Run from the repository root:  python3 benchmarks/pool.py [--seconds S]

For each size (255 bytes, the EGD maximum and the server's hot path; and
64 KiB) it times repeated calls for about S seconds per reader (best of 3
rounds, the readers alternating) and prints MB/s, calls/s and the ratio to
os.urandom measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prngd.pool import Pool  # noqa: E402

SIZES = (255, 65536)


def seeded_pool(generator: str, **kw) -> Pool:
    pool = Pool(generator=generator, **kw)
    pool.add("benchmark", os.urandom(64), 512)
    assert pool.seeded
    return pool


def pr_reader(pool: Pool):
    """A read on a `,pr` socket: a reseed from the kernel, then the read."""
    def read(n: int) -> bytes:
        pool.refresh()
        return pool.read(n)
    return read


def find_batch(read, n: int) -> int:
    """Calls per timed batch: enough for ~10 ms, to keep timer overhead out."""
    batch = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            read(n)
        if time.perf_counter() - t0 > 0.01:
            return batch
        batch *= 2


def timed_round(read, n: int, batch: int, seconds: float) -> float:
    """Calls per second over one round of about `seconds`."""
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(batch):
            read(n)
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - t0)


def measure(readers: dict, n: int, seconds: float, rounds: int = 3) -> dict:
    """Best of `rounds` for each reader, the readers alternating round by round,
    so that background load hits them all alike."""
    batches = {name: find_batch(read, n) for name, read in readers.items()}
    best = dict.fromkeys(readers, 0.0)
    for _ in range(rounds):
        for name, read in readers.items():
            best[name] = max(best[name], timed_round(read, n, batches[name], seconds / rounds))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default 1.5)")
    args = ap.parse_args()

    readers = {
        "os.urandom": os.urandom,
        "chacha20": seeded_pool("chacha20").read,
        "hmac-drbg sha256": seeded_pool("hmac-drbg").read,
        "hmac-drbg sha512": seeded_pool("hmac-drbg", drbg_hash="sha512").read,
        "chacha20 ,pr": pr_reader(seeded_pool("chacha20")),
    }
    print(f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs)")
    header = f"{'generator':<18} {'read(n)':>8} {'MB/s':>10} {'calls/s':>12} {'vs os.urandom':>14}"
    print(header)
    print("-" * len(header))
    for n in SIZES:
        results = measure(readers, n, args.seconds)
        base = results["os.urandom"]
        for name, cps in results.items():
            print(f"{name:<18} {n:>8} {cps * n / 1e6:>10.1f} {cps:>12,.0f} {cps / base:>13.3g}x")
        print()


if __name__ == "__main__":
    main()
