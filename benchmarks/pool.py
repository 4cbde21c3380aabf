"""Throughput of Pool.read() for both generators, next to os.urandom.

Run from the repository root:  python3 benchmarks/pool.py [--seconds S]

For each size (255 bytes, the EGD maximum and the server's hot path; and
64 KiB) it times repeated calls for about S seconds (best of 3 rounds) and
prints MB/s, calls/s and the ratio to os.urandom measured in the same run.
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


def seeded_pool(generator: str) -> Pool:
    pool = Pool(generator=generator)
    pool.add("benchmark", os.urandom(64), 512)
    assert pool.seeded
    return pool


def calls_per_second(read, n: int, seconds: float) -> float:
    """Best of 3 rounds of about seconds/3 each, in batches to keep timer overhead out."""
    batch = 1
    while True:  # find a batch that takes ~10 ms
        t0 = time.perf_counter()
        for _ in range(batch):
            read(n)
        if time.perf_counter() - t0 > 0.01:
            break
        batch *= 2
    best = 0.0
    for _ in range(3):
        calls = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds / 3
        while True:
            for _ in range(batch):
                read(n)
            calls += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, calls / (now - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default 1.5)")
    args = ap.parse_args()

    readers = {
        "os.urandom": os.urandom,
        "chacha20": seeded_pool("chacha20").read,
        "hmac-drbg sha256": seeded_pool("hmac-drbg").read,
    }
    print(f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs)")
    header = f"{'generator':<18} {'read(n)':>8} {'MB/s':>10} {'calls/s':>12} {'vs os.urandom':>14}"
    print(header)
    print("-" * len(header))
    for n in SIZES:
        base = None
        for name, read in readers.items():
            cps = calls_per_second(read, n, args.seconds)
            if base is None:
                base = cps
            print(f"{name:<18} {n:>8} {cps * n / 1e6:>10.1f} {cps:>12,.0f} {cps / base:>13.3g}x")
        print()


if __name__ == "__main__":
    main()
