"""The admin endpoint: request handling without I/O, the renderings, the socket, and a real daemon's answers."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, egd_read, fork_as_nobody, recv_exact
from prngd import admin, config

SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())


# ---------------------------------------------------------------- a validator for the schema's subset

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}
_KNOWN = {"$schema", "$id", "title", "description", "type", "properties", "required", "additionalProperties",
          "items", "minimum"}


def schema_errors(value, schema: dict, where: str = "$") -> list[str]:
    """What is wrong with `value` under `schema`, for the keywords status.schema.json uses."""
    unknown = set(schema) - _KNOWN
    assert not unknown, f"the test validator does not know {unknown}: teach it or use jsonschema"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: {value!r} is not of type {types}"]
    errors = []
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def assert_valid_status(status: dict) -> None:
    assert schema_errors(status, SCHEMA) == []
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator(SCHEMA).validate(status)


SAMPLE = {
    "version": "0.1.0", "pid": 4242, "uptime_s": 12.5, "seeded": True, "entropy_bits": 3072, "low_entropy": False,
    "generator": "chacha20", "reseeds": 7,
    "pool": {"generator": "chacha20", "seeded": True, "entropy_bits": 3072, "reseeds": 7, "bytes_out": 9000,
             "credited_bits_total": 4096.5, "credited_bits_by_source": {"kernel": 4000, "jitter": 96.5},
             "samples_by_source": {"kernel": 3, "jitter": 12}, "last_reseed_age_s": 1.25, "pr_reseeds": 5},
    "restore_generation": 2,
    "sources": [
        {"name": "kernel", "kind": "file", "enabled": True, "healthy": True, "samples": 3, "credited_bits": 4000,
         "failures": 0, "last_error": None},
        {"name": 'we"ird\\name\nx', "kind": "command", "enabled": True, "healthy": False, "samples": 1,
         "credited_bits": 0.0, "failures": 2, "last_error": "exit status 1"},
    ],
    "connections": {"current": 2, "total": 40, "rejected": 1, "max": 1024},
    "requests": {"entropy_level": 3, "read_nonblocking": 10, "read_blocking": 5, "write_entropy": 1, "get_pid": 2},
    "bytes_served": 800, "protocol_errors": 1,
    "seedfile": {"path": "/var/lib/prngd/seed", "loaded": True, "loaded_bytes": 512, "credited_bits": 256,
                 "note": None, "last_save": 1700000000.5, "last_save_credit": True, "saves": 3, "failures": 0,
                 "last_error": None},
    "exchange": {"path": "/var/lib/postfix/prng_exch", "updates": 4, "failures": 0, "last_error": None},
    "sockets": ["/var/run/egd-pool", "127.0.0.1:708"],
}


def families(text: str) -> dict:
    """{family name: [(sample name, labels, value)]} from the exposition text."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_sample_status_is_valid():
    assert_valid_status(SAMPLE)
    assert_valid_status({**SAMPLE, "seedfile": None, "exchange": None, "sources": []})


@pytest.mark.parametrize("broken", [
    {"pid": "4242"},
    {"seeded": 1},
    {"entropy_bits": -1},
    {"connections": {"current": 0, "total": 0, "rejected": 0}},
    {"seedfile": {"path": "/x"}},
    {"sources": [{"name": "x"}]},
])
def test_validator_catches_what_the_schema_forbids(broken):
    assert schema_errors({**SAMPLE, **broken}, SCHEMA)


def test_a_missing_member_is_caught():
    status = dict(SAMPLE)
    del status["sockets"]
    assert schema_errors(status, SCHEMA) == ["$: missing 'sockets'"]


# ---------------------------------------------------------------- respond(): request head -> response bytes

def split(response: bytes) -> tuple[int, dict, bytes]:
    return admin.parse_response(response)


def test_status_answers_json():
    code, headers, body = split(admin.respond(b"GET /status HTTP/1.0\r\n\r\n", lambda: SAMPLE))
    assert code == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == SAMPLE


def test_metrics_answers_the_text_format():
    code, headers, body = split(admin.respond(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
                                              lambda: SAMPLE))
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "prngd_entropy_bits" in families(body.decode())


@pytest.mark.parametrize("head,code", [
    (b"GET /index.html HTTP/1.0\r\n\r\n", 404),
    (b"GET /status/x HTTP/1.0\r\n\r\n", 404),
    (b"GET /../etc/passwd HTTP/1.0\r\n\r\n", 404),
    (b"POST /status HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
    (b"\x00\x01\x02\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET status HTTP/1.0\r\n\r\n", 400),
    (b"GET /status FTP/1.0\r\n\r\n", 400),
    (b"", 400),
])
def test_everything_else_is_refused(head, code):
    assert split(admin.respond(head, lambda: SAMPLE))[0] == code


def test_the_root_lists_every_endpoint_and_each_answers():
    history = {"now": 1.0, "interval_s": 60, "capacity": 1440, "points": []}
    code, headers, body = split(admin.respond(b"GET / HTTP/1.0\r\n\r\n", lambda: SAMPLE, lambda: history))
    assert code == 200 and headers["content-type"].startswith("text/plain")
    listed = {}
    for line in body.decode().splitlines():
        path, description = line.split(None, 1)
        listed[path] = description
    assert set(listed) == {"/status", "/metrics", "/history"}
    for path in listed:
        head = f"GET {path} HTTP/1.0\r\n\r\n".encode()
        assert split(admin.respond(head, lambda: SAMPLE, lambda: history))[0] == 200, path


def test_query_strings_and_http09_lines_are_accepted():
    assert split(admin.respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", lambda: SAMPLE))[0] == 200
    assert split(admin.respond(b"GET /status\n\n", lambda: SAMPLE))[0] == 200


def test_head_has_no_body():
    response = admin.respond(b"HEAD /status HTTP/1.0\r\n\r\n", lambda: SAMPLE)
    assert response.startswith(b"HTTP/1.0 200 OK\r\n") and response.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0" not in response and response.count(b"\r\n\r\n") == 1


def test_a_failing_status_is_a_500_not_a_crash():
    def broken():
        raise RuntimeError("boom")

    assert split(admin.respond(b"GET /metrics HTTP/1.0\r\n\r\n", broken))[0] == 500


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(head):
    response = admin.respond(head, lambda: SAMPLE)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split(b" ", 2)[1] in (b"200", b"400", b"404", b"405")
    assert b"\r\nConnection: close\r\n\r\n" in response


# ---------------------------------------------------------------- renderings

def test_metrics_families_and_values():
    fams = families(admin.render_metrics(SAMPLE))
    # counters lose their _total suffix in the parser's family names
    for name in ("prngd_build_info", "prngd_uptime_seconds", "prngd_seeded", "prngd_entropy_bits",
                 "prngd_low_entropy", "prngd_reseeds", "prngd_generated_bytes", "prngd_credited_bits",
                 "prngd_requests", "prngd_bytes_served", "prngd_protocol_errors", "prngd_connections",
                 "prngd_connections_max", "prngd_connections_accepted", "prngd_connections_rejected", "prngd_source_healthy",
                 "prngd_source_credited_bits", "prngd_source_samples", "prngd_source_failures", "prngd_seed_saves",
                 "prngd_seed_loaded", "prngd_exchange_updates", "prngd_last_reseed_age_seconds"):
        assert name in fams, name
    assert fams["prngd_entropy_bits"] == [("prngd_entropy_bits", {}, 3072)]
    assert fams["prngd_seeded"][0][2] == 1
    assert fams["prngd_reseeds"] == [("prngd_reseeds_total", {}, 7)]
    requests = {labels["command"]: v for _, labels, v in fams["prngd_requests"]}
    assert requests == SAMPLE["requests"]
    assert ("prngd_connections", {"state": "current"}, 2) in fams["prngd_connections"]
    assert fams["prngd_build_info"] == [("prngd_build_info", {"version": "0.1.0"}, 1)]
    # label values with quotes, backslashes and newlines survive the round trip
    healthy = {labels["source"]: v for _, labels, v in fams["prngd_source_healthy"]}
    assert healthy == {"kernel": 1, 'we"ird\\name\nx': 0}
    assert fams["prngd_seed_last_save_timestamp_seconds"][0][2] == 1700000000.5
    assert fams["prngd_restores"] == [("prngd_restores_total", {}, 2)]
    assert fams["prngd_pr_reseeds"] == [("prngd_pr_reseeds_total", {}, 5)]


def test_metrics_have_help_and_type_lines():
    text = admin.render_metrics(SAMPLE)
    names = {line.split()[0].split("{")[0] for line in text.splitlines() if not line.startswith("#")}
    for name in names:
        assert f"# TYPE {name} " in text, name
        assert f"# HELP {name} " in text, name
    assert text.endswith("\n")


def test_metrics_of_a_partial_status_leave_the_rest_out():
    fams = families(admin.render_metrics({"entropy_bits": 5, "seedfile": None, "sources": [{"bogus": 1}]}))
    assert fams["prngd_entropy_bits"][0][2] == 5
    assert "prngd_seed_saves" not in fams and "prngd_source_healthy" not in fams


def test_nonfinite_numbers():
    status = {**SAMPLE, "uptime_s": float("nan"), "pool": {**SAMPLE["pool"], "last_reseed_age_s": float("inf")}}
    fams = families(admin.render_metrics(status))
    assert math.isnan(fams["prngd_uptime_seconds"][0][2])
    assert fams["prngd_last_reseed_age_seconds"][0][2] == math.inf
    decoded = json.loads(admin.render_status_json(status))  # strict JSON: no NaN tokens
    assert decoded["uptime_s"] is None and decoded["pool"]["last_reseed_age_s"] is None


def test_status_text_for_people():
    text = admin.render_status_text(SAMPLE)
    assert "pid 4242" in text and "chacha20, seeded, 3072 bits" in text
    assert "UNHEALTHY" in text and "exit status 1" in text
    assert "/var/lib/prngd/seed, loaded" in text and "/var/run/egd-pool, 127.0.0.1:708" in text
    sparse = admin.render_status_text({**SAMPLE, "seedfile": None, "exchange": None, "sources": []})
    assert "seed file:   none" in sparse


# ---------------------------------------------------------------- serve_admin on a socket (in this process)

async def open_admin(nursery, path: str, get_status=lambda: SAMPLE):
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    await nursery.start(admin.serve_admin, sock, get_status)


async def raw_exchange(path: str, data: bytes, *, shut: bool = False) -> bytes:
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(data)
        if shut:
            await stream.send_eof()
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
        return out


async def test_serve_status_and_metrics(tmp_path):
    path = str(tmp_path / "admin")
    async with trio.open_nursery() as nursery:
        await open_admin(nursery, path)
        assert await admin.fetch_status(path) == SAMPLE
        metrics = admin.parse_response(await admin.fetch(path, "/metrics"))
        assert metrics[0] == 200 and "prngd_requests" in families(metrics[2].decode())
        assert admin.parse_response(await admin.fetch(path, "/nope"))[0] == 404
        # the blocking client, from a thread
        assert await trio.to_thread.run_sync(admin.get_status, path, 5.0) == SAMPLE
        nursery.cancel_scope.cancel()


async def test_oversized_and_garbage_requests_get_an_error_and_the_server_survives(tmp_path):
    path = str(tmp_path / "admin")
    async with trio.open_nursery() as nursery:
        await open_admin(nursery, path)
        big = b"GET /status HTTP/1.0\r\nX-Pad: " + b"a" * (2 * admin.MAX_HEAD)
        assert admin.parse_response(await raw_exchange(path, big))[0] == 431
        assert admin.parse_response(await raw_exchange(path, b"\xff\xfe garbage\r\n\r\n"))[0] == 400
        # EOF before a complete line
        assert admin.parse_response(await raw_exchange(path, b"GET /sta", shut=True))[0] == 400
        # a peer that connects and leaves at once
        s = await trio.open_unix_socket(path)
        await s.aclose()
        # a line then EOF, without the blank line: still answered
        assert admin.parse_response(await raw_exchange(path, b"GET /status\n", shut=True))[0] == 200
        assert await admin.fetch_status(path) == SAMPLE
        nursery.cancel_scope.cancel()


async def test_a_silent_peer_times_out(tmp_path, autojump_clock):
    path = str(tmp_path / "admin")
    async with trio.open_nursery() as nursery:
        await open_admin(nursery, path)
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(b"GET /status HTTP/1.0\r\n")  # never finishes the head
            start = trio.current_time()
            out = b""
            while chunk := await stream.receive_some(65536):
                out += chunk
            assert trio.current_time() - start >= admin.READ_TIMEOUT
        assert admin.parse_response(out)[0] == 408
        nursery.cancel_scope.cancel()


async def test_a_failing_get_status_does_not_stop_the_server(tmp_path):
    path = str(tmp_path / "admin")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("not ready")
        return SAMPLE

    async with trio.open_nursery() as nursery:
        await open_admin(nursery, path, flaky)
        with pytest.raises(admin.AdminError, match="500"):
            await admin.fetch_status(path)
        assert await admin.fetch_status(path) == SAMPLE
        nursery.cancel_scope.cancel()


def test_get_status_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        admin.get_status(str(tmp_path / "missing"))
    with pytest.raises(admin.AdminError):
        admin.parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(admin.AdminError):
        admin.parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


# ---------------------------------------------------------------- against the real daemon

def run_tool(*args, timeout=30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "prngd", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_status_json_from_a_running_daemon(start_daemon):
    d = start_daemon()
    egd_read(d.socket, 100)
    out = run_tool("status", "--json", d.socket)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert_valid_status(status)
    assert status["pid"] == d.pid
    assert status["seeded"] is True and status["entropy_bits"] > 0
    assert status["requests"]["read_blocking"] >= 1 and status["bytes_served"] >= 100
    assert status["sockets"] == [d.socket]
    assert status["seedfile"] is None  # started with -n

    text = run_tool("status", d.socket)
    assert text.returncode == 0, text.stderr
    assert f"pid {d.pid}" in text.stdout and "seeded" in text.stdout
    # --admin names the admin socket directly
    direct = run_tool("status", "--json", "--admin", config.admin_socket_for(d.socket))
    assert direct.returncode == 0 and json.loads(direct.stdout)["pid"] == d.pid


def test_status_of_a_missing_daemon_fails_clearly(tmp_path):
    out = run_tool("status", str(tmp_path / "nobody.sock"))
    assert out.returncode == 1
    assert "no such socket" in out.stderr and "nobody.sock.admin" in out.stderr


def test_metrics_from_a_running_daemon(start_daemon):
    d = start_daemon()
    for _ in range(3):
        egd_read(d.socket, 64)
        egd_read(d.socket, 16, blocking=False)
    code, headers, body = admin.parse_response(admin.request(config.admin_socket_for(d.socket), "/metrics"))
    assert code == 200
    fams = families(body.decode())
    value = {name: samples[0][2] for name, samples in fams.items() if len(samples) == 1}
    assert value["prngd_seeded"] == 1
    assert value["prngd_entropy_bits"] > 0
    assert value["prngd_uptime_seconds"] > 0
    assert value["prngd_bytes_served"] >= 3 * (64 + 16)
    assert value["prngd_connections_accepted"] >= 6
    requests = {labels["command"]: v for _, labels, v in fams["prngd_requests"]}
    assert requests["read_blocking"] >= 3 and requests["read_nonblocking"] >= 3
    assert set(requests) == {"entropy_level", "read_nonblocking", "read_blocking", "write_entropy", "get_pid"}
    assert fams["prngd_source_healthy"], "every configured source reports its health"
    assert all(v in (0, 1) for _, _, v in fams["prngd_source_healthy"])
    assert "prngd_seed_saves" not in fams  # no seed file with -n


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reads_the_admin_socket(start_daemon):
    d = start_daemon()
    admin_path = config.admin_socket_for(d.socket)
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", admin_path, "http://localhost/status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pid"] == d.pid
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                          "--unix-socket", admin_path, "http://localhost/other"], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout == "404"
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", admin_path, "http://localhost/"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "/history " in out.stdout, out.stderr


# ---------------------------------------------------------------- who may connect

def test_admin_socket_is_private_and_egd_socket_is_public(start_daemon, open_dir):
    sock = str(open_dir / "egd.sock")
    start_daemon(socket=sock)
    admin_path = config.admin_socket_for(sock)
    assert stat.S_IMODE(os.stat(admin_path).st_mode) == 0o600
    assert os.stat(admin_path).st_uid == os.getuid()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
    if os.getuid() != 0:
        pytest.skip("only root can try the sockets as another user (uid 65534); modes checked above")

    # A child that becomes nobody tries both sockets and reports through a pipe.
    def try_both(w: int) -> int:
        result = {}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(admin_path)
            result["admin"] = "connected"
        except OSError as e:
            result["admin"] = e.errno
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(sock)
                s.sendall(bytes((2, 32)))
                result["egd"] = len(recv_exact(s, 32))
        except OSError as e:
            result["egd"] = f"error {e}"
        os.write(w, json.dumps(result).encode())
        return 0

    pid, r = fork_as_nobody(try_both)
    with os.fdopen(r, "rb") as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, report
    result = json.loads(report)
    import errno

    assert result["admin"] == errno.EACCES, "a non-owner must not reach the admin socket"
    assert result["egd"] == 32, "any local user may read from the EGD socket"


def test_at_most_8_admin_connections_are_handled_at_once(start_daemon):
    """Issue 20, finding 4: the endpoint's handlers are capped, so its descriptors are a bounded share."""
    d = start_daemon()
    path = config.admin_socket_for(d.socket)
    holding = []
    try:
        for _ in range(8):  # each holds a handler while its request head is incomplete
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /status HTTP/1.0\r\n")
            holding.append(s)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ninth:
            ninth.settimeout(10)
            ninth.connect(path)
            try:
                ninth.sendall(b"GET /status HTTP/1.0\r\n\r\n")
                answer = ninth.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            assert answer == b"", "a ninth connection was served"
        d.wait_for_line("all 8 handlers busy, 1 connection(s) refused")
        for s in holding:  # the eight are still served
            s.sendall(b"\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.0 200 OK")
            s.close()
    finally:
        for s in holding:
            s.close()
    assert egd_read(d.socket, 4)  # the EGD side never noticed
