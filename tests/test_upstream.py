"""[upstream]: this prngd as a client of another EGD server, a source of kind `upstream`."""

from __future__ import annotations

import json
import socket
import time

import pytest

from prngd import config, gather, sources
from prngd.health import HealthTestFailure
from conftest import egd_read
from test_admin import run_tool


def status(d) -> dict:
    out = run_tool("status", "--json", d.socket)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def upstream_of(d) -> dict:
    (src,) = [s for s in status(d)["sources"] if s["kind"] == "upstream"]
    return src


def until(check, timeout: float = 30.0):
    """Wait for a state of the daemons (asked through their admin sockets) to come about."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def upstream_config(path: str, **keys) -> str:
    keys = {"interval": 0.2, "bytes": 16, **keys}
    return "[sources]\nsystem = no\njitter = no\nexternal_commands = no\n[upstream]\nsocket = " + path + "\n" \
        + "".join(f"{k} = {v}\n" for k, v in keys.items())


def test_upstream_section_parses_and_checks(tmp_path):
    s = config.Settings(**config.parse_ini("[upstream]\nsocket = ./host-pool\ninterval = 30\nbytes = 64\n"
                                           "credit_bits_per_byte = 0.5\n"))
    assert s.upstream == config.Upstream("./host-pool", 30.0, 64, 0.5)
    assert config.resolve_paths(s, str(tmp_path)).upstream.socket == f"{tmp_path}/host-pool"
    assert config.parse_ini("[upstream]\nsocket = vsock:2:708\n")["upstream"].credit_bits_per_byte == 0.0
    for text, problem in [("[upstream]\ninterval = 5\n", "needs socket"),
                          ("[upstream]\nsocket = localhost:http\n", "[upstream] socket"),
                          ("[upstream]\nsocket = /a,pr\n", "options apply to listening sockets"),
                          ("[upstream]\nsocket = /a\nbytes = 0\n", "[upstream] bytes = 0"),
                          ("[upstream]\nsocket = /a\ncredit_bits_per_byte = 9\n", "credit_bits_per_byte = 9"),
                          ("[upstream]\nsocket = /a\nrate = 1\n", "unknown key 'rate'")]:
        with pytest.raises(config.ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            config.parse_ini(text)
    built = sources.build_sources(config.Settings(kernel=False, system=False, jitter=False, external_commands=False,
                                                  upstream=config.Upstream("/run/host", 9.0, 8, 1.0)))
    assert [(b.kind, b.name, b.interval, b.cap_bits) for b in built] == [("upstream", "upstream:/run/host", 9.0, 8.0)]


def test_a_silent_upstream_costs_a_bounded_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "silent")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()  # connections queue and are never answered
    monkeypatch.setattr(sources.UpstreamSource, "TIMEOUT", 0.3)
    src = sources.UpstreamSource(path, 16, 1.0)
    start = time.monotonic()
    with pytest.raises(gather.SourceError, match="no answer"):
        src.collect()
    assert time.monotonic() - start < 2
    listener.close()


def test_a_constant_upstream_fails_its_health_tests(monkeypatch):
    src = sources.UpstreamSource("/nowhere", 255, 1.0, rate=1.0)

    class Constant:
        def __init__(self, *a, **k): pass
        def __enter__(self): return self
        def __exit__(self, *exc): pass
        def read(self, n): return bytes(n)

    monkeypatch.setattr(sources, "EGDClient", Constant)
    with pytest.raises(HealthTestFailure):
        src.collect()


def test_upstream_between_two_real_daemons(start_daemon):
    a = start_daemon()
    before = status(a)["requests"]["read_blocking"]
    b = start_daemon(config=upstream_config(a.socket, credit_bits_per_byte=2))
    first = until(lambda: (u := upstream_of(b))["samples"] >= 2 and u)
    later = until(lambda: (u := upstream_of(b))["samples"] >= first["samples"] + 2 and u)
    assert later["bytes"] == 16 * later["samples"] > first["bytes"]
    assert later["credit_bits_per_byte"] == 2.0
    assert later["credited_bits"] == 2 * 16 * later["samples"]  # credited as configured, no more
    assert later["enabled"] and later["healthy"] and later["failures"] == 0
    assert status(b)["pool"]["credited_bits_by_source"]["upstream:" + a.socket] >= later["credited_bits"] - 64
    assert status(a)["requests"]["read_blocking"] >= before + later["samples"]


def test_uncredited_by_default(start_daemon):
    a = start_daemon()
    b = start_daemon(config=upstream_config(a.socket))
    got = until(lambda: (u := upstream_of(b))["samples"] >= 2 and u)
    assert got["credited_bits"] == 0 and got["credit_bits_per_byte"] == 0.0 and got["bytes"] >= 32


def test_a_failing_upstream_is_reported_once_then_recovers(start_daemon, tmp_path):
    path = str(tmp_path / "host-pool")
    b = start_daemon(config=upstream_config(path))
    until(lambda: upstream_of(b)["consecutive_failures"] >= 3)
    assert len(egd_read(b.socket, 32)) == 32  # serving all along
    a = start_daemon(socket=path)
    b.wait_for_line("recovered after")
    got = until(lambda: (u := upstream_of(b))["samples"] >= 1 and u)
    assert got["enabled"] and got["consecutive_failures"] == 0
    reports = [line for line in b.lines if "WARNING" in line]
    assert len(reports) == 1, b.log()
    a.stop()
