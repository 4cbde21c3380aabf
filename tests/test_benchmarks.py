"""Smoke test of the benchmark suite (benchmarks/): its quickest mode against the real daemon.

One scenario (02 ff, persistent), one concurrency (8), Unix only, a fraction of
a second per server: this checks the machinery (daemon start, exec-to-first-byte,
load generator, baseline server, idle-connection RSS, JSON and Markdown), not
the figures, except that no reply may be short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "prngd" / "cli.py").exists(), reason="no daemon (prngd/cli.py) yet")

QUICKEST = ["--quick", "--duration", "0.2", "--scenarios", "block255", "--conns", "8", "--unix-only",
            "--stream-baseline", "none", "--no-ceiling", "--idle-conns", "50", "--warmup", "0",
            "--quiet-wait", "0", "--no-plot"]


@pytest.mark.parametrize("generator", ["default", "python"])
def test_quickest_benchmark_run(tmp_path, generator):
    argv = [sys.executable, "-m", "benchmarks", *QUICKEST, "--out", str(tmp_path)]
    if generator == "python":
        argv.append("--python-loadgen")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())

    assert {"meta", "startup", "memory", "cells", "ratios", "checks", "urandom_255_per_s"} <= result.keys()
    assert result["meta"]["load_generator"] in (("python",) if generator == "python" else ("c", "python"))
    assert result["urandom_255_per_s"] > 0
    for server in ("prngd", "baseline_raw"):
        assert 0 < result["startup"][server]["exec_to_first_byte_s"] < 30
        mem = result["memory"][server]
        assert mem["rss_idle_kb"] > 0 and mem["idle_conns_open"] == 50 and mem["idle_conns_failed"] == 0

    cells = {c["server"]: c for c in result["cells"]}
    assert set(cells) == {"prngd", "baseline_raw"}
    for server, c in cells.items():
        assert (c["transport"], c["scenario"], c["conns"]) == ("unix", "block255", 8)
        assert c["requests"] > 0 and c["rps"] > 0
        for key in ("mbps", "p50_us", "p99_us", "p999_us", "server_cpu_s_per_1k"):
            assert c[key] is not None and c[key] > 0, (server, key)
        # Zero short, zero-length, overlong or failed replies.
        assert (c["short"], c["zero"], c["overlong"], c["errors"], c["eof"]) == (0, 0, 0, 0, 0), (server, c)

    (ratio,) = result["ratios"]
    assert ratio["rps_vs_baseline_raw"] > 0
    assert result["checks"]["no_short_replies"] is True
    assert "### Performance" in proc.stdout and "| unix | block255" in proc.stdout
    assert (tmp_path / "benchmark.md").read_text().startswith("### Performance")


def test_pyspy_raw_summary():
    from benchmarks.profile_daemon import summarize_pyspy

    raw = ("main (prngd/cli.py:31);Daemon._serve (prngd/server.py:600);Daemon._send (prngd/server.py:663) 30\n"
           "main (prngd/cli.py:31);Daemon._serve (prngd/server.py:600) 10\n"
           "unrolled_run (trio/_core/_run.py:2866) 10\n")
    s = summarize_pyspy(raw, expected=100)
    assert s["samples"] == 50
    assert s["self_lines"][0] == {"where": "prngd/server.py:663 Daemon._send", "samples": 30, "share": 0.6}
    incl = {row["where"]: row["samples"] for row in s["prngd_lines_inclusive"]}
    assert incl["prngd/server.py:600 Daemon._serve"] == 40

    # With --threads, only the main thread (the event loop) is counted.
    threaded = ("thread (7): MainThread;main (prngd/cli.py:31);Daemon._send (prngd/server.py:663) 3\n"
                "thread (9): Trio thread 0;WorkerThread._work (trio/_core/_thread_cache.py:211) 5\n")
    s = summarize_pyspy(threaded)
    assert s["samples"] == 3 and s["threads"] == {"MainThread": 3, "Trio thread 0": 5}
    assert [row["where"] for row in s["self_lines"]] == ["prngd/server.py:663 Daemon._send"]
