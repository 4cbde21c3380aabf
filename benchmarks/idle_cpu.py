"""CPU used by an idle prngd at default settings, as a percentage of one core.

    python3 benchmarks/idle_cpu.py [--seconds 60] [--warmup 0]

Starts `python -m prngd -f -n DIR/egd.sock` in a temporary directory (no seed
file, no clients, default sources and intervals), waits until it logs that it
serves, then compares psutil's cpu_times of the process before and after
`--seconds`.  The commands it runs count too: their CPU time is in the
daemon's children_user / children_system once it has reaped them.  Target:
under 1% of one core.  Exit status 0 if under the target, 1 if not.

The first minute is not the quietest: the pool starts below low_water_bits,
so sources are sampled four times as often until the estimate passes it, and
every command runs once at start.  --warmup skips that much time first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
READY = "serving on "
TARGET = 1.0


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement length (default 60)")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds to skip after the daemon is ready")
    ap.add_argument("--startup-timeout", type=float, default=30.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="prngd-idle-") as tmp:
        sock = os.path.join(tmp, "egd.sock")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        daemon = subprocess.Popen([sys.executable, "-m", "prngd", "-f", "-n", sock], cwd=tmp, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, errors="replace")
        ready = threading.Event()
        log: list[str] = []

        def pump():  # keep the pipe drained for the whole run
            for line in daemon.stderr:
                log.append(line.rstrip("\n"))
                if READY in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        try:
            if not ready.wait(args.startup_timeout) or daemon.poll() is not None:
                print("the daemon did not become ready:\n" + "\n".join(log), file=sys.stderr)
                return 2
            proc = psutil.Process(daemon.pid)
            if args.warmup > 0:
                time.sleep(args.warmup)
            own0, kids0 = cpu_seconds(proc)
            wall0 = time.monotonic()
            time.sleep(args.seconds)
            own1, kids1 = cpu_seconds(proc)
            wall = time.monotonic() - wall0
            if daemon.poll() is not None:
                print("the daemon exited during the measurement:\n" + "\n".join(log), file=sys.stderr)
                return 2
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()

    own, kids = own1 - own0, kids1 - kids0
    percent = 100.0 * (own + kids) / wall
    print(f"idle prngd, default settings, {wall:.1f} s after ready (+{args.warmup:g} s warm-up):")
    print(f"  daemon   {own:7.3f} s CPU")
    print(f"  commands {kids:7.3f} s CPU (reaped children)")
    print(f"  total    {percent:.3f} % of one core (target < {TARGET:g} %)")
    return 0 if percent < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
