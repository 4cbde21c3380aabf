"""A start signalled at any instant stops quietly (issue 19): no traceback, exit 0, nothing of it left, the seed kept.

50 real starts of `python -m prngd`, each sent SIGINT or SIGTERM (alternating) at
a random moment of its first second, a few at a time so the run stays short.

Before the interpreter reaches prngd's first line (its own start and site:
tens of milliseconds) nothing of prngd can act: a SIGTERM ends the process by
its default action, a SIGINT is Python's KeyboardInterrupt in site or runpy.
Such a start is told by the signal mask in /proc/PID/status when the signal
is sent: SIGTERM is caught from prngd's first line on (prngd.startsignals).
Even before, no code of prngd's but that first line may show in the output.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from prngd import seedfile
from prngd.pool import Pool

STARTS = 50
AT_ONCE = 5
CONFIG = "[sources]\nexternal_commands = no\n"
BROKEN = re.compile(r"Traceback|Exception|\w+Error\b")


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def _valid_seed(path: Path) -> bool:
    try:
        seedfile.parse(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def test_a_signal_at_any_moment_of_the_start_stops_it_quietly(tmp_path):
    seed_template = tmp_path / "seed-template"
    pool = Pool()
    pool.add("test", os.urandom(32), 256)
    seedfile.load_and_replace(str(seed_template), pool)
    assert _valid_seed(seed_template)
    config = tmp_path / "prngd.conf"
    config.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random()
    seed_of_run = rng.randrange(1 << 32)
    rng.seed(seed_of_run)
    failures, interpreter_window = [], 0
    for batch in range(0, STARTS, AT_ONCE):
        runs = []
        for i in range(batch, min(batch + AT_ONCE, STARTS)):
            d = tmp_path / f"start-{i}"
            d.mkdir()
            (d / "seed").write_bytes(seed_template.read_bytes())
            os.chmod(d / "seed", 0o600)
            sig = signal.SIGINT if i % 2 else signal.SIGTERM
            argv = [sys.executable, "-m", "prngd", "-f", "-c", str(config), "-s", str(d / "seed"),
                    "-p", str(d / "pid"), str(d / "egd.sock")]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, text=True, errors="replace")
            runs.append({"i": i, "dir": d, "sig": sig, "proc": proc, "at": time.monotonic() + rng.random()})
        for run in sorted(runs, key=lambda r: r["at"]):
            time.sleep(max(0.0, run["at"] - time.monotonic()))
            run["caught"] = _catches_sigterm(run["proc"].pid)
            run["proc"].send_signal(run["sig"])
        for run in runs:
            out, err = run["proc"].communicate(timeout=60)
            code, d, name = run["proc"].returncode, run["dir"], run["sig"].name
            what = f"start {run['i']} ({name}, caught: {run['caught']}): exit {code}\n{err}{out}"
            if run["caught"]:
                if code != 0 or BROKEN.search(err):
                    failures.append(what)
            else:
                interpreter_window += 1
                # Python's own start: its default action, or prngd's if it took over meanwhile;
                # of prngd, at most the entry point's first line had run.
                frames = set(re.findall(r'File "[^"]*/prngd/(\w+\.py)"', err))
                if code not in (0, -signal.SIGTERM, -signal.SIGINT, 1) or not frames <= {"__main__.py"}:
                    failures.append(what)
            left = [p.name for p in (d / "egd.sock", d / "egd.sock.admin", d / "pid") if os.path.lexists(p)]
            if left:
                failures.append(f"{what}\nleft behind: {left}")
            if not _valid_seed(d / "seed"):
                failures.append(f"{what}\nthe seed file is gone or broken")
    assert not failures, f"random seed {seed_of_run}; {len(failures)} bad starts:\n" + "\n\n".join(failures)
    # Most of a first second is prngd's, even with starts side by side.
    assert interpreter_window < STARTS * 3 // 4, f"{interpreter_window} starts signalled before prngd caught SIGTERM"
