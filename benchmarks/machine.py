"""How busy the machine is apart from the benchmark (other processes, the hypervisor).

On a shared 2-core machine another process's test run can halve a figure.
The suite waits for a quiet moment before each measurement, records how
much CPU others took during it ("other_cpu": busy CPU seconds of the whole
machine, minus the server's and the load generator's, per second of the
run), and repeats a measurement that others disturbed.
"""

from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_busy_s() -> float | None:
    """Busy CPU seconds of all cores since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def kernel_cpu_s() -> float:
    """CPU seconds spent in interrupts, softirqs (loopback TCP's receive path, timers) and
    kernel threads: work the benchmark itself causes but that no process is charged for."""
    total = 0.0
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        total += (int(fields[6]) + int(fields[7])) / CLK_TCK
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2:].split()
            if int(rest[6]) & 0x00200000:  # PF_KTHREAD
                total += (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        pass
    return total


def busy_cores(window: float = 0.1) -> float | None:
    """Cores kept busy over `window` seconds (by anything; call it while the benchmark idles)."""
    b0 = cpu_busy_s()
    if b0 is None:
        return None
    time.sleep(window)
    return (cpu_busy_s() - b0) / window


def wait_quiet(max_wait: float, threshold: float = 0.15) -> tuple[float | None, float]:
    """Wait (up to max_wait s) until under `threshold` cores are busy; (last busy figure, seconds waited)."""
    t0 = time.monotonic()
    busy = busy_cores()
    while busy is not None and busy > threshold and time.monotonic() - t0 < max_wait:
        busy = busy_cores()
    return busy, time.monotonic() - t0


def loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None
