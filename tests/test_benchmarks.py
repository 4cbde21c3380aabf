"""Smoke test of the benchmark suite (benchmarks/): its quickest mode against the real daemon.

One scenario (02 ff, persistent), one concurrency (8), Unix only, a fraction of
a second per server: this checks the machinery (daemon start, exec-to-first-byte,
load generator, baseline server, idle-connection RSS, JSON and Markdown), not
the figures, except that no reply may be short.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "prngd" / "cli.py").exists(), reason="no daemon (prngd/cli.py) yet")

QUICKEST = ["--quick", "--duration", "0.2", "--scenarios", "block255", "--conns", "8", "--unix-only",
            "--stream-baseline", "none", "--no-ceiling", "--idle-conns", "50", "--warmup", "0",
            "--quiet-wait", "0", "--no-plot", "--starts", "2"]


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
        # Two fresh starts each, alternated (prngd first, then the baseline first), besides the rep's start.
        assert result["startup"][server]["alternated"] and len(result["startup"][server]["runs_s"]) == 2
        assert len(result["startup"][server]["rep_starts_s"]) == 1
        mem = result["memory"][server]
        assert mem["rss_idle_kb"] > 0 and mem["idle_conns_open"] == 50 and mem["idle_conns_failed"] == 0
    assert result["startup_ratio"]["vs_baseline_raw"] > 0

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


# ---------------------------------------------------------------- the report, from a recorded run

def cell(server, scenario, conns, rps, transport="unix"):
    return {"transport": transport, "scenario": scenario, "conns": conns, "server": server, "rps": rps,
            "mbps": rps * 255 / 1e6, "p50_us": 100.0, "p99_us": 400.0, "p999_us": 900.0,
            "server_cpu_s_per_1k": 0.02, "short": 0, "zero": 0, "overlong": 0, "errors": 0, "connect_errors": 0,
            "stalled_at_end": 0, "other_cpu": 0.0, "max_other_cpu": 0.0}


def recorded_run(skipped=None) -> dict:
    """What suite.run() records (the fields the report reads), with round figures."""
    from benchmarks import suite

    cells = [cell("prngd", "block255", 1, 20000), cell("baseline_raw", "block255", 1, 16000),
             cell("c_epoll", "block255", 1, 40000),
             cell("prngd", "block255", 50, 150000), cell("baseline_raw", "block255", 50, 50000),
             cell("c_epoll", "block255", 50, 300000),
             cell("prngd", "openssh", 1, 12000), cell("baseline_raw", "openssh", 1, 8000),
             cell("c_epoll", "openssh", 1, 15000)]
    scenarios = ["block255", "openssh"]
    if not skipped:
        cells.append(cell("prngd", "block255pr", 1, 12000))
        scenarios.append("block255pr")
    sc = {name: suite.SCENARIOS[name] for name in scenarios}
    result = {
        "meta": {"command": "python3 -m benchmarks", "date": "2026-12-03T08:00:00+00:00", "commit": "abc1234",
                 "cpus": 2, "cpu": "a CPU", "kernel": "6.18", "python": "3.11.7", "reps": 5, "duration_s": 0.6,
                 "load_generator": "c", "transports": ["unix"], "scenarios": {n: s.label for n, s in sc.items()},
                 "requests": {n: s.request for n, s in sc.items()}, "modes": {n: s.mode for n, s in sc.items()},
                 "like": {n: s.like for n, s in sc.items() if s.like}, "skipped_scenarios": skipped or {},
                 "headline_cell": {"transport": "unix", "scenario": "block255", "conns": 50}},
        "startup": {"prngd": {"exec_to_first_byte_s": 0.30, "runs_s": [0.31, 0.30, 0.29], "alternated": True},
                    "baseline_raw": {"exec_to_first_byte_s": 0.25, "runs_s": [0.25, 0.26, 0.24], "alternated": True}},
        "startup_ratio": {"vs_baseline_raw": 0.30 / 0.25, "pairs_median": 1.2},
        "memory": {"prngd": {"rss_start_kb": 34000, "peak_rss_kb": 35000},
                   "baseline_raw": {"rss_start_kb": 26000, "peak_rss_kb": 29000}},
        "urandom_255_per_s": 700000.0, "cells": cells,
    }
    result["ratios"] = suite.ratios(cells, result["meta"]["like"])
    result["checks"] = suite.checks(result, argparse.Namespace(quiet_threshold=0.2))
    return result


def test_report_shows_start_up_and_one_client_as_same_run_ratios():
    from benchmarks import report

    result = recorded_run()
    md = report.markdown(result)
    rows = md.splitlines()
    assert "| exec to first byte (02 01 over Unix; median of 3 alternated starts) | 0.300 s | 0.250 s | 1.20 | | |" in rows
    # One persistent connection and one client on new connections: against the raw trio baseline and C.
    assert "| unix, 1 connection, `02 ff` persistent | 20000 req/s | 16000 req/s | 1.25 | 40000 req/s | 0.50 |" in rows
    assert ("| unix, 1 client, `02 30` on a new connection per request | 12000 req/s | 8000 req/s | 1.50 "
            "| 15000 req/s | 0.80 |") in rows
    # The `,pr` socket's row is compared with the plain 02 ff cells of the other servers.
    assert ("| unix, 1 connection, `02 ff` persistent on a `,pr` socket | 12000 req/s | 16000 req/s | 0.75 "
            "| 40000 req/s | 0.30 |") in rows
    assert any(r.startswith("| unix | block255pr `02 ff` `,pr` socket | 1 | 12000 | 16000 | 0.75 | 40000 | 0.30 |")
               for r in rows), md
    # They sit in the headline table, before the memory rows.
    assert rows.index("| unix, 1 connection, `02 ff` persistent | 20000 req/s | 16000 req/s | 1.25 "
                      "| 40000 req/s | 0.50 |") < next(i for i, r in enumerate(rows) if r.startswith("| RSS after start"))
    assert "exec to first byte 1.20 x baseline (<= 1.2: yes)" in md
    assert "02 ff on 1 Unix connection: 1.25 x baseline (>= 1.0: yes)" in md

    ch = result["checks"]
    assert set(ch["one_connection"]) == {"unix/block255", "unix/openssh", "unix/block255pr"}
    assert ch["one_connection"]["unix/openssh"] == {"rps_vs_baseline_raw": 1.5, "rps_vs_c_epoll": 0.8}
    pr = next(r for r in result["ratios"] if r["scenario"] == "block255pr")
    assert pr["rps_vs_prngd_plain"] == 0.6 and pr["rps_vs_baseline_raw"] == 0.75


def test_report_says_why_the_pr_row_is_missing():
    from benchmarks import report

    why = "the daemon took /tmp/x/probe-pr.sock,pr for a socket path: it has no ,pr sockets"
    md = report.markdown(recorded_run(skipped={"block255pr": why}))
    assert f"Skipped: block255pr: {why}." in md.splitlines()
    assert "`,pr`" not in md


# ---------------------------------------------------------------- does the daemon take PATH,pr?

FAKE_DAEMON = """
import socket, sys
path, how = sys.argv[1], sys.argv[2]
if how == "refuse":
    print("prngd: socket " + path + ": unknown suffix")
    sys.exit(2)
if how == "pr":
    path = path[:-len(",pr")]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
while True:
    c, _ = s.accept()
    c.recv(2)
    c.sendall(b"x")
    c.close()
"""


@pytest.mark.parametrize("how", ["pr", "literal", "refuse"])
def test_pr_probe(tmp_path, how):
    from benchmarks.servers import probe_pr

    path = str(tmp_path / "probe.sock")
    why = probe_pr([sys.executable, "-c", FAKE_DAEMON, path + ",pr", how], path, tmp_path / "probe.log", tmp_path,
                   timeout=20)
    if how == "pr":
        assert why is None
    else:
        assert why and "\n" not in why
        assert why == (f"the daemon took {path},pr for a socket path: it has no ,pr sockets" if how == "literal" else
                       f"the daemon refused {path},pr (exit 2: prngd: socket {path},pr: unknown suffix)")


def test_pr_probe_on_this_daemon(tmp_path):
    """The real daemon: it serves PATH for PATH,pr, or the probe says in one line why not."""
    from benchmarks.servers import prngd_argv, probe_pr

    path = str(tmp_path / "probe.sock")
    why = probe_pr(prngd_argv(path + ",pr", None, []), path, tmp_path / "probe.log", tmp_path)
    assert why is None or ("\n" not in why and f"{path},pr" in why), why
