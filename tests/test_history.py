"""The history ring, /history, the summary's sparklines, and SIGUSR1's summary, unit and on a real daemon."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tracemalloc

import pytest
import trio

from conftest import ROOT, egd_read
from prngd import admin, config, history, summary, tools
from prngd.history import COMMANDS, History
from test_admin import SAMPLE, schema_errors

HISTORY_SCHEMA = json.loads((ROOT / "docs" / "history.schema.json").read_text())
QUIET = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"


def status_at(uptime: float, *, requests=(0, 0, 0, 0, 0), current=0, rejected=0, reseeds=0, entropy=1000) -> dict:
    return {**SAMPLE, "uptime_s": uptime, "entropy_bits": entropy, "reseeds": reseeds,
            "connections": {**SAMPLE["connections"], "current": current, "rejected": rejected},
            "requests": dict(zip(COMMANDS, requests))}


# ---------------------------------------------------------------- the ring

def test_first_sample_is_a_baseline_then_rates_come_from_deltas():
    h = History(interval=10)
    assert h.sample(status_at(5.0, requests=(1, 2, 3, 4, 5), rejected=7, reseeds=2), now=100.0) is None
    assert len(h) == 0
    point = h.sample(status_at(15.0, requests=(11, 2, 53, 4, 6), current=3, rejected=9, reseeds=5, entropy=2048),
                     now=110.0)
    assert point == {"t": 110.0, "entropy_bits": 2048,
                     "requests_per_s": {"entropy_level": 1.0, "read_nonblocking": 0.0, "read_blocking": 5.0,
                                        "write_entropy": 0.0, "get_pid": 0.1},
                     "connections": 3, "rejected": 2, "reseeds": 3}
    assert h.points() == [point]


def test_a_late_sample_gives_the_true_rate_over_the_uptime_clock():
    h = History(interval=60)
    h.sample(status_at(0.0))
    # The sampler woke 30 s late: 900 requests over 90 s is 10/s, not 15/s.
    point = h.sample(status_at(90.0, requests=(0, 0, 900, 0, 0)))
    assert point["requests_per_s"]["read_blocking"] == 10.0


def test_a_counter_that_drops_gives_zero_not_a_negative_rate():
    h = History()
    h.sample(status_at(10.0, requests=(50, 50, 50, 50, 50), rejected=9, reseeds=9))
    point = h.sample(status_at(20.0, requests=(0, 0, 60, 0, 0), rejected=1, reseeds=1))
    assert point["requests_per_s"] == {"entropy_level": 0.0, "read_nonblocking": 0.0, "read_blocking": 1.0,
                                       "write_entropy": 0.0, "get_pid": 0.0}
    assert point["rejected"] == 0 and point["reseeds"] == 0


def test_a_partial_status_gives_zeros_not_an_error():
    h = History()
    h.sample({"uptime_s": 1.0})
    point = h.sample({"uptime_s": 2.0, "entropy_bits": float("nan"), "connections": {"current": float("inf")}})
    assert point["entropy_bits"] == 0 and point["connections"] == 0
    assert set(point["requests_per_s"].values()) == {0.0}


def test_the_ring_is_bounded_and_keeps_the_newest():
    h = History(interval=1, capacity=5)
    for i in range(10):
        h.sample(status_at(float(i), entropy=i), now=1000.0 + i)
    assert len(h) == 5 and h.taken == 9
    assert [p["entropy_bits"] for p in h.points()] == [5, 6, 7, 8, 9]
    assert h.as_dict(now=2000.0)["points"][0]["t"] == 1005.0


def test_a_day_of_points_is_small_and_valid(capsys):
    """1440 points, every field busy (large counts, fractional rates): the ring's memory, measured."""
    h = History(interval=60)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1441):
            n = i * 123457
            h.sample(status_at(i * 60.0 + (i % 7) / 10, requests=(n, 3 * n, 7 * n, n // 3, n // 7), current=i % 1000,
                               rejected=i * 5, reseeds=i * 2, entropy=4096 - i), now=1.8e9 + i * 60)
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(h) == 1440
    with capsys.disabled():
        print(f"\n[history] 1440 points hold {size / 1024:.1f} KiB")
    assert size < 192 * 1024
    served = json.loads(admin.render_history_json(h.as_dict()))
    assert schema_errors(served, HISTORY_SCHEMA) == []
    assert len(served["points"]) == 1440 and served["capacity"] == 1440 and served["interval_s"] == 60
    assert all(math.isfinite(r) for p in served["points"] for r in p["requests_per_s"].values())


def test_history_json_of_an_empty_ring_is_valid():
    served = json.loads(admin.render_history_json(History().as_dict(now=5.0)))
    assert served == {"now": 5.0, "interval_s": 60.0, "capacity": 1440, "points": []}
    assert schema_errors(served, HISTORY_SCHEMA) == []


def test_the_schema_validator_catches_a_bad_point():
    h = History()
    h.sample(status_at(0.0))
    h.sample(status_at(1.0))
    good = h.as_dict()
    bad = {**good, "points": [{**good["points"][0], "connections": -1}]}
    assert schema_errors(bad, HISTORY_SCHEMA)
    missing = {**good, "points": [{k: v for k, v in good["points"][0].items() if k != "reseeds"}]}
    assert schema_errors(missing, HISTORY_SCHEMA) == ["$.points[0]: missing 'reseeds'"]


@pytest.mark.parametrize("value", ["0", "0.05", "nan", "-1", "100000"])
def test_history_interval_out_of_range_is_refused(tmp_path, value):
    cfg = tmp_path / "p.conf"
    cfg.write_text(f"[prngd]\nhistory_interval = {value}\n")
    with pytest.raises(config.ConfigError, match=r"\[prngd\] history_interval = .*: must be a finite number of seconds from 0.1 to 86400"):
        config.load(str(cfg))


async def test_the_sampler_survives_a_failing_status_and_follows_the_interval(autojump_clock):
    calls = []

    def get_status():
        calls.append(trio.current_time())
        if len(calls) == 3:
            raise RuntimeError("a bug in status()")
        return status_at(float(len(calls)), requests=(len(calls), 0, 0, 0, 0))

    intervals = iter([1.0] * 5 + [2.0] * 100)
    h = History()
    with trio.move_on_after(15.5):
        await history.sample_every(h, get_status, lambda: next(intervals))
    # baseline at 0, points at 1..5 (the one at 2 lost), then every 2 s: 7, 9, 11, 13, 15
    assert calls == [0, 1, 2, 3, 4, 5, 7, 9, 11, 13, 15]
    assert len(h) == 9 and h.interval == 2.0
    assert h.points()[1]["requests_per_s"]["entropy_level"] == 1.0  # over the two seconds around the lost one


# ---------------------------------------------------------------- drawing

def test_sparkline_spans_the_series_range():
    assert summary.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert summary.sparkline([3700, 4096, 3898]) == "▁█▅"  # a dip near the top still shows
    assert summary.sparkline([0, 0, 0]) == "▁▁▁"
    assert summary.sparkline([5, 5]) == "▄▄"
    assert summary.sparkline([]) == ""


def test_many_points_are_averaged_into_columns():
    values = list(range(120))
    cols = summary.columns(values, 60)
    assert len(cols) == 60 and cols[0] == 0.5 and cols[-1] == 118.5
    assert summary.columns([1, 2, 3], 60) == [1, 2, 3]


def history_dict(values: list[tuple[float, int, float, int]], now: float) -> dict:
    """(t, entropy, requests/s in read_blocking, connections) -> a /history dict."""
    return {"now": now, "interval_s": 60, "capacity": 1440, "points": [
        {"t": t, "entropy_bits": e, "requests_per_s": {**dict.fromkeys(COMMANDS, 0.0), "read_blocking": r},
         "connections": c, "rejected": 0, "reseeds": 0} for t, e, r, c in values]}


def test_the_summary_draws_only_the_last_hour():
    old = [(1000.0 + 60 * i, 9999, 500.0, 99) for i in range(10)]  # more than an hour before `now`
    recent = [(10000.0 + 60 * i, 2000 + 100 * i, float(i), i % 3) for i in range(30)]
    h = history_dict(old + recent, now=10000.0 + 60 * 30)
    drawn = summary.render_history(h, sparklines=True)
    assert drawn.startswith("last hour:   30 points, one every 60 s\n")
    lines = {line.split()[0]: line for line in drawn.splitlines()[1:]}
    assert re.search(r"entropy +[▁-█]{30}  min 2000, mean 3450, max 4900, last 4900 bits$", lines["entropy"])
    assert re.search(r"requests/s +▁[▁-█]{28}█  min 0, mean 14.5, max 29, last 29$", lines["requests/s"])
    assert "9999" not in drawn and "500" not in drawn
    plain = summary.render_history(h, sparklines=False)
    assert not set(summary.BLOCKS) & set(plain)
    assert "  entropy      min 2000, mean 3450, max 4900, last 4900 bits" in plain
    assert "  connections  min 0, mean 1, max 2, last 2" in plain


def test_a_busy_hour_fits_in_sixty_columns():
    h = history_dict([(float(i), 100, float(i % 2), 0) for i in range(3600)], now=3600.0)
    drawn = summary.render_history(h, sparklines=True)
    assert "3599 points" in drawn and "60 columns" in drawn
    spark = re.search(r"requests/s +([▁-█]+) ", drawn).group(1)
    assert len(spark) == 60


def test_no_points_yet_says_so():
    empty = {"now": 5.0, "interval_s": 60, "capacity": 1440, "points": []}
    assert summary.render_history(empty, True) == "last hour:   no points yet (one every 60 s)\n"
    assert summary.render(SAMPLE, None) == admin.render_status_text(SAMPLE)


def test_rejections_by_reason_are_named_when_the_daemon_counts_them():
    conns = {**SAMPLE["connections"], "rejected": 5, "rejected_by_reason": {"global_cap": 1, "per_uid": 4}}
    text = summary.render({**SAMPLE, "connections": conns})
    assert "5 rejected (global_cap 1, per_uid 4)\n" in text
    assert "1 rejected\n" in summary.render(SAMPLE)


class FakeStream:
    def __init__(self, tty: bool, encoding: str) -> None:
        self.tty, self.encoding = tty, encoding

    def isatty(self) -> bool:
        return self.tty


def test_blocks_only_for_a_terminal_that_can_show_them():
    assert tools._can_draw(FakeStream(True, "utf-8"))
    assert not tools._can_draw(FakeStream(False, "utf-8"))
    assert not tools._can_draw(FakeStream(True, "ascii"))
    assert not tools._can_draw(FakeStream(True, "no-such-codec"))


# ---------------------------------------------------------------- the admin socket

def test_history_and_index_answers():
    h = History(interval=60)
    h.sample(status_at(0.0))
    h.sample(status_at(60.0, requests=(0, 0, 600, 0, 0)))
    code, headers, body = admin.parse_response(admin.respond(b"GET /history HTTP/1.0\r\n\r\n", lambda: SAMPLE,
                                                             h.as_dict))
    assert code == 200 and headers["content-type"] == admin.JSON_TYPE
    assert json.loads(body)["points"][0]["requests_per_s"]["read_blocking"] == 10.0
    # without a history (an embedder that gives none) /history is simply not there
    assert admin.parse_response(admin.respond(b"GET /history HTTP/1.0\r\n\r\n", lambda: SAMPLE))[0] == 404


# ---------------------------------------------------------------- a real daemon

def run_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), LC_ALL="C.UTF-8")
    env.pop("PYTHONIOENCODING", None)  # the terminal's locale decides, as for a user
    return env


def status_in_a_pty(sock: str) -> str:
    """`prngd status SOCK` with its stdout on a pseudo-terminal; what it printed."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "prngd", "status", sock], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=run_env())
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal's last descriptor
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.wait(30) == 0, proc.stderr.read()
    return out.decode("utf-8").replace("\r\n", "\n")


def status_piped(sock: str) -> str:
    out = subprocess.run([sys.executable, "-m", "prngd", "status", sock], capture_output=True, text=True,
                         env=run_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def taken(d) -> int:
    """Points the daemon's ring holds (fewer than its capacity here, so also the points taken)."""
    return len(admin.get_history(config.admin_socket_for(d.socket))["points"])


def test_status_draws_the_last_hour_on_a_terminal_and_numbers_in_a_pipe(start_daemon):
    """Must-show 4: history injected by a short history_interval, traffic between two points."""
    d = start_daemon("-d", config=QUIET + "[prngd]\nhistory_interval = 0.1\n")
    d.wait_for_line("history point 3:")
    for _ in range(20):
        egd_read(d.socket, 16)
    # The point after the traffic, and one more: the requests line has a peak and a floor.
    d.wait_for_line(f"history point {taken(d) + 2}:")

    drawn = status_in_a_pty(d.socket)
    lines = {line.split()[0]: line for line in drawn.splitlines() if line.startswith("  ")}
    points = int(re.search(r"^last hour: +(\d+) points, one every 0.1 s$", drawn, re.M).group(1))
    assert points >= 5
    for name in ("entropy", "requests/s", "connections"):
        spark = re.search(r"^  \S+ +([▁-█]+)  min ", lines[name]).group(1)
        assert len(spark) == min(points, summary.MAX_COLUMNS), lines[name]
    requests_spark = re.search(r"([▁-█]+)", lines["requests/s"]).group(1)
    assert "█" in requests_spark and "▁" in requests_spark  # the traffic's peak, the quiet after it

    plain = status_piped(d.socket)
    assert not set(summary.BLOCKS) & set(plain)
    match = re.search(r"^  requests/s   min 0, mean [\d.]+, max ([\d.]+), last [\d.]+$", plain, re.M)
    assert match and float(match.group(1)) > 0, plain
    assert re.search(r"^  entropy      min \d+, mean \d+, max \d+, last \d+ bits$", plain, re.M), plain
    # The present-moment part is the same in both.
    assert f"pid {d.pid}" in drawn and f"pid {d.pid}" in plain


def test_sigusr1_logs_what_prngd_status_prints(start_daemon):
    d = start_daemon("-d", config=QUIET + "[prngd]\nhistory_interval = 0.1\n")
    d.wait_for_line("history point 2:")
    egd_read(d.socket, 100)
    printed = status_piped(d.socket)
    d.signal(signal.SIGUSR1)
    d.wait_for_line("statistics:   connections  min ")  # the summary's last line
    logged = [line.split("INFO: statistics: ", 1)[1] for line in d.lines if "INFO: statistics: " in line]

    def shape(text_lines):  # counts, times and rates move between the two; the words must not
        return [re.sub(r"\d+(\.\d+)?", "#", line) for line in text_lines]

    assert shape(logged) == shape(printed.splitlines())
    assert "100 bytes served" in printed and any("bytes served" in line for line in logged)
    assert "{" not in "".join(logged)  # not a dict repr


def test_history_from_a_running_daemon_matches_the_schema_and_the_index(start_daemon):
    d = start_daemon("-d", config=QUIET + "[prngd]\nhistory_interval = 0.1\n")
    d.wait_for_line("history point 2:")
    path = config.admin_socket_for(d.socket)
    served = admin.get_history(path)
    assert schema_errors(served, HISTORY_SCHEMA) == []
    assert served["interval_s"] == 0.1 and served["capacity"] == history.CAPACITY and len(served["points"]) >= 2
    ts = [p["t"] for p in served["points"]]
    assert ts == sorted(ts) and served["now"] >= ts[-1]


def test_sighup_changes_the_interval(start_daemon):
    d = start_daemon("-d", config=QUIET + "[prngd]\nhistory_interval = 0.1\n")
    d.wait_for_line("history point 1:")
    cfg = d.args[d.args.index("-c") + 1]
    with open(cfg, "w") as f:
        f.write(QUIET + "[prngd]\nhistory_interval = 0.25\n")
    d.signal(signal.SIGHUP)
    d.wait_for_line("configuration reloaded")
    # The sampler reads the interval after each point: the first point after the reload is followed by 0.25 s.
    d.wait_for_line(f"history point {taken(d) + 1}:")
    assert admin.get_history(config.admin_socket_for(d.socket))["interval_s"] == 0.25


async def test_status_of_a_daemon_without_history_still_prints_the_status(tmp_path):
    """An older daemon answers 404 at /history: the status is printed, and one line says why the hour is missing."""
    import socket

    path = str(tmp_path / "old.admin")
    async with trio.open_nursery() as nursery:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen()
        await nursery.start(admin.serve_admin, sock, lambda: SAMPLE)  # no get_history
        out = await trio.run_process([sys.executable, "-m", "prngd", "status", "--admin", path],
                                     capture_stdout=True, capture_stderr=True, env=run_env(), check=False)
        nursery.cancel_scope.cancel()
    assert out.returncode == 0
    assert "pid 4242" in out.stdout.decode() and "last hour" not in out.stdout.decode()
    assert out.stderr.decode().splitlines() == [
        "prngd status: no history: the admin socket answered 404: 404 Not Found"]
