"""The EGD client: every command against a real daemon (Unix and TCP), misbehaving fake servers, the tools."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, free_tcp_port, recv_exact
from prngd import client, egd, tools
from prngd.client import AsyncEGDClient, EGDClient, EGDError, NoSocket, Refused, ShortReply, Timeout


# ---------------------------------------------------------------- fake servers

@contextlib.contextmanager
def fake_server(path: str, handler):
    """A Unix socket whose every connection goes to handler(conn) in a thread; handler owns nothing else."""
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen()
    done = threading.Event()
    errors = []

    def serve():
        while not done.is_set():
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with conn:
                try:
                    handler(conn)
                except OSError:
                    pass
                except Exception as e:  # surfaced by the test, not lost in the thread
                    errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield done
    finally:
        done.set()
        lst.shutdown(socket.SHUT_RDWR)
        lst.close()
        t.join(5)
    assert not errors, errors


def recording_server(path: str, sink: bytearray):
    """Answers 0x04 with pid 4242 and records every request byte."""

    def handler(conn):
        dec = egd.Decoder()
        while data := conn.recv(4096):
            sink.extend(data)
            dec.feed(data)
            for req in dec:
                if isinstance(req, egd.GetPid):
                    conn.sendall(egd.encode_pid(4242))
                elif isinstance(req, egd.ReadBlocking):
                    conn.sendall(bytes(req.n))
                elif isinstance(req, egd.ReadNonBlocking):
                    conn.sendall(egd.encode_nonblocking(bytes(req.n)))

    return fake_server(path, handler)


def partial(reply: bytes, request_len: int):
    """A server that reads one request, sends `reply` (a truncated one), and closes."""

    def handler(conn):
        recv_exact(conn, request_len)
        conn.sendall(reply)

    return handler


SHORT_REPLIES = [
    ("entropy_level", (), b"\x00\x01", 1),
    ("read_nonblocking", (32,), b"\x20" + b"a" * 5, 2),
    ("read", (32,), b"a" * 31, 2),
    ("pid", (), b"\x0c   42", 1),
    ("pid", (), b"", 1),
]


@pytest.mark.parametrize("method,args,reply,request_len", SHORT_REPLIES)
def test_server_closing_early_is_a_short_reply(tmp_path, method, args, reply, request_len):
    path = str(tmp_path / "fake")
    with fake_server(path, partial(reply, request_len)):
        start = time.monotonic()
        with EGDClient(path, timeout=10) as c, pytest.raises(ShortReply, match="closed"):
            getattr(c, method)(*args)
        assert time.monotonic() - start < 5, "a closed connection is seen at once, not at the timeout"


def test_short_reply_in_the_middle_of_a_long_read(tmp_path):
    def handler(conn):
        recv_exact(conn, 4)  # 02 ff 02 2d
        conn.sendall(b"x" * 255 + b"y" * 10)

    path = str(tmp_path / "fake")
    with fake_server(path, handler), EGDClient(path) as c, pytest.raises(ShortReply, match="10 of 45"):
        c.read(300)


@pytest.mark.parametrize("method,args,reply,request_len", SHORT_REPLIES)
async def test_async_server_closing_early_is_a_short_reply(tmp_path, method, args, reply, request_len):
    path = str(tmp_path / "fake")
    with fake_server(path, partial(reply, request_len)):
        with trio.fail_after(5):
            async with await AsyncEGDClient.connect(path) as c:
                with pytest.raises(ShortReply):
                    await getattr(c, method)(*args)


def test_silent_server_times_out(tmp_path):
    path = str(tmp_path / "fake")
    with fake_server(path, lambda conn: done.wait(10)) as done:
        with EGDClient(path, timeout=0.2) as c, pytest.raises(Timeout, match="no answer"):
            c.entropy_level()


async def test_async_silent_server_times_out(tmp_path):
    path = str(tmp_path / "fake")
    with fake_server(path, lambda conn: done.wait(10)) as done:
        async with await AsyncEGDClient.connect(path, timeout=0.2) as c:
            with pytest.raises(Timeout):
                await c.read(10)


def test_missing_socket_is_no_socket(tmp_path):
    with pytest.raises(NoSocket, match="no such socket"):
        EGDClient(str(tmp_path / "missing"))
    with pytest.raises(NoSocket):
        EGDClient(str(tmp_path / "no-dir" / "missing"))


def test_stale_socket_file_is_refused(tmp_path):
    path = str(tmp_path / "stale")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: what a crashed daemon leaves
    with pytest.raises(Refused, match="refused"):
        EGDClient(path)


def test_closed_tcp_port_is_refused():
    with pytest.raises(Refused):
        EGDClient(f"127.0.0.1:{free_tcp_port()}")


async def test_async_connect_errors(tmp_path):
    with pytest.raises(NoSocket):
        await AsyncEGDClient.connect(str(tmp_path / "missing"))
    with pytest.raises(Refused):
        await AsyncEGDClient.connect(f"127.0.0.1:{free_tcp_port()}")


def test_errors_share_a_base_class():
    for cls in (NoSocket, Refused, ShortReply, Timeout):
        assert issubclass(cls, EGDError)


def test_a_garbled_pid_is_an_error(tmp_path):
    path = str(tmp_path / "fake")
    with fake_server(path, partial(b"\x03abc", 1)), EGDClient(path) as c, pytest.raises(EGDError, match="pid|process"):
        c.pid()


# ---------------------------------------------------------------- what goes on the wire

def test_long_reads_are_pipelined_requests_of_at_most_255(tmp_path):
    sent = bytearray()
    path = str(tmp_path / "fake")
    with recording_server(path, sent), EGDClient(path) as c:
        assert c.read(600) == bytes(600)
        assert c.read_nonblocking(256) == bytes(256)
        assert c.read(0) == b""
        c.pid()
    assert bytes(sent) == bytes([2, 255, 2, 255, 2, 90, 1, 255, 1, 1, 4])


def test_write_entropy_splits_and_claims_in_proportion(tmp_path):
    sent = bytearray()
    data = os.urandom(600)
    path = str(tmp_path / "fake")
    with recording_server(path, sent), EGDClient(path) as c:
        assert c.write_entropy(data, 1000) == 1000
        assert c.write_entropy(b"abc", 100) == 24  # clamped to 8 bits a byte
        assert c.write_entropy(b"", 5) == 0
        assert c.pid() == 4242  # 0x03 has no reply: the round trip shows the writes arrived
    dec = egd.Decoder()
    dec.feed(bytes(sent))
    writes = [r for r in dec if isinstance(r, egd.WriteEntropy)]
    assert [len(w.data) for w in writes] == [255, 255, 90, 3]
    assert b"".join(w.data for w in writes[:3]) == data
    assert sum(w.bits for w in writes[:3]) == 1000
    assert writes[3].bits == 24


@given(st.integers(0, 3000), st.integers(-5, 30000))
def test_write_claims_add_up(n, bits):
    data = bytes(n)
    op = client._op_write(data, bits)
    requests = []
    try:
        batch = next(op)
        while True:
            requests += batch
            batch = op.send([b""] * len(batch))
    except StopIteration as done:
        claimed = done.value
    assert claimed == min(max(bits, 0), 8 * n)
    assert sum(r.bits for r in requests) == claimed
    assert all(0 <= r.bits <= 8 * len(r.data) and 1 <= len(r.data) <= 255 for r in requests)
    assert b"".join(r.data for r in requests) == data
    for r in requests:
        egd.encode_request(r)  # every chunk is a valid request


def test_negative_read_is_refused(tmp_path):
    path = str(tmp_path / "fake")
    with recording_server(path, bytearray()), EGDClient(path) as c, pytest.raises(ValueError):
        c.read(-1)


# ---------------------------------------------------------------- against the real daemon

@pytest.fixture(params=["unix", "tcp"])
def served(request, start_daemon):
    """(daemon, address) for a daemon reached over a Unix socket or over TCP."""
    if request.param == "unix":
        d = start_daemon()
        return d, d.socket
    port = free_tcp_port()
    d = start_daemon(extra_sockets=[f"127.0.0.1:{port}"])
    return d, f"127.0.0.1:{port}"


def test_every_command(served):
    d, address = served
    with EGDClient(address) as c:
        assert c.entropy_level() > 0
        a, b = c.read(600), c.read(600)
        assert len(a) == len(b) == 600 and a != b
        assert len(c.read(1)) == 1
        # once seeded, prngd answers 0x01 in full
        assert len(c.read_nonblocking(700)) == 700
        assert c.write_entropy(os.urandom(300), 64) == 64
        assert c.pid() == d.pid
        assert c.read(0) == b""
    # Spelled the way PRNGD spells TCP sockets too
    if not address.startswith("/"):
        with EGDClient("tcp/" + address) as c:
            assert c.pid() == d.pid


async def test_every_command_async(served):
    d, address = served
    with trio.fail_after(20):
        async with await AsyncEGDClient.connect(address) as c:
            assert await c.entropy_level() > 0
            a = await c.read(300)
            assert len(a) == 300 and a != await c.read(300)
            assert len(await c.read_nonblocking(300)) == 300
            assert await c.write_entropy(b"z" * 10, 200) == 80
            assert await c.pid() == d.pid


async def test_many_async_clients_at_once(start_daemon):
    d = start_daemon()
    results = []

    async def one():
        async with await AsyncEGDClient.connect(d.socket) as c:
            results.append(await c.read(64))

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(one)
    assert len(set(results)) == 20


def test_a_stopped_daemon_is_no_socket(start_daemon):
    d = start_daemon()
    assert d.stop() == 0
    with pytest.raises(NoSocket):
        EGDClient(d.socket)


# ---------------------------------------------------------------- the tools

def tool(*args, input=None, timeout=30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "prngd", *args], input=input, capture_output=True, env=env,
                          timeout=timeout)


def test_get_tool_raw_hex_base64(start_daemon):
    d = start_daemon()
    raw = tool("get", "300", d.socket)
    assert raw.returncode == 0, raw.stderr
    assert len(raw.stdout) == 300
    hexed = tool("get", "40", "--hex", d.socket)  # options may follow SOCKET
    assert hexed.returncode == 0 and len(bytes.fromhex(hexed.stdout.decode().strip())) == 40
    b64 = tool("get", "--base64", "33", d.socket)
    assert b64.returncode == 0 and len(base64.b64decode(b64.stdout)) == 33


def test_get_tool_over_tcp(start_daemon, capsysbinary):
    port = free_tcp_port()
    start_daemon(extra_sockets=[f"127.0.0.1:{port}"])
    assert tools.main(["get", "16", "--hex", f"127.0.0.1:{port}"]) == 0
    assert len(bytes.fromhex(capsysbinary.readouterr().out.decode().strip())) == 16


def test_add_tool(start_daemon, tmp_path, capsys, monkeypatch):
    d = start_daemon()
    f = tmp_path / "noise"
    f.write_bytes(os.urandom(1000))
    assert tools.main(["add", str(f), "--bits", "128", d.socket]) == 0
    assert "sent 1000 bytes claiming 128 bits" in capsys.readouterr().out
    # Out of range is refused, not clamped (issue 12).
    assert tools.main(["add", str(f), "--bits", "99999", d.socket]) == 2
    assert "at most 8000" in capsys.readouterr().err
    piped = tool("add", "-", d.socket, input=b"from stdin")
    assert piped.returncode == 0 and b"sent 10 bytes claiming 0 bits" in piped.stdout
    assert tools.main(["add", str(tmp_path / "missing"), d.socket]) == 1
    assert "cannot read" in capsys.readouterr().err
    from prngd import admin, config

    status = admin.get_status(config.admin_socket_for(d.socket))
    assert status["requests"]["write_entropy"] == 4 + 1  # 255-byte chunks (the refused add sent nothing)


def _kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def _writes(d) -> int:
    from prngd import admin, config

    return admin.get_status(config.admin_socket_for(d.socket))["requests"]["write_entropy"]


def test_add_tool_streams_a_device_in_bounded_memory(start_daemon):
    """Issue 19: `prngd add /dev/zero --bits 8` read everything before sending (1.8 GB in 3 s)."""
    d = start_daemon()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "prngd", "add", "/dev/zero", "--bits", "8", d.socket],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        # Three seconds of streaming is the point of the test; memory is sampled meanwhile so that
        # a client that hoards (the old one) is stopped at the limit, not left to fill the machine.
        deadline = time.monotonic() + 3
        peak = 0
        while (left := deadline - time.monotonic()) > 0:
            with pytest.raises(subprocess.TimeoutExpired):  # /dev/zero never ends: the tool must not either
                p.wait(timeout=min(left, 0.1))
            peak = max(peak, _kib(p.pid, "VmHWM"))
            assert peak < 50 * 1024, f"prngd add holds {peak} kB"
        writes = _writes(d)
        assert writes > 1000, "the data is sent as it is read, not after the device ends"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0] == "prngd add: /dev/zero is a device: sending until Ctrl-C (--bytes N stops after N bytes)"
    assert len(lines) == 2 and lines[1].startswith("prngd add: interrupted: sent ") and " claiming 8 bits" in lines[1]
    sent = int(lines[1].split("sent ")[1].split()[0])
    assert sent >= 255 * writes, "what the tool says it sent, the daemon counted"
    assert d.proc.poll() is None


def test_add_tool_bytes_limit_and_stream_claims(start_daemon):
    d = start_daemon()
    r = tool("add", "/dev/zero", "--bytes", "1000", "--bits", "80", d.socket)
    assert r.returncode == 0, r.stderr
    assert b"sent 1000 bytes claiming 80 bits" in r.stdout and r.stderr == b""
    assert _writes(d) == 4
    # More than 8 bits a byte of what --bytes allows is refused before anything is sent.
    r = tool("add", "/dev/zero", "--bytes", "10", "--bits", "81", d.socket)
    assert r.returncode == 2 and b"at most 80" in r.stderr
    # A pipe's length is unknown: the claim goes with its first bytes, and a short pipe says so.
    r = tool("add", "-", "--bits", "100", d.socket, input=b"x" * 10)
    assert r.returncode == 0, r.stderr
    assert b"sent 10 bytes claiming 80 bits" in r.stdout and b"80 of the 100 bits asked for" in r.stdout
    assert _writes(d) == 5


@given(st.lists(st.integers(1, 255), max_size=40), st.integers(0, 30000), st.one_of(st.none(), st.integers(1, 12000)))
def test_stream_claims_never_exceed_the_data_or_the_claim(sizes, bits, total):
    requests = list(client._write_requests((bytes(n) for n in sizes), bits, total))
    assert [len(r.data) for r in requests] == sizes
    assert all(0 <= r.bits <= 8 * len(r.data) for r in requests)
    claimed = sum(r.bits for r in requests)
    assert claimed <= bits
    if total is None or total == sum(sizes):
        assert claimed == min(bits, 8 * sum(sizes))


def test_ping_tool(start_daemon):
    d = start_daemon()
    up = tool("ping", d.socket)
    assert up.returncode == 0, up.stderr
    assert f"pid {d.pid}".encode() in up.stdout and b" ms" in up.stdout
    d.stop()
    down = tool("ping", d.socket)
    assert down.returncode == 1
    assert b"no such socket" in down.stderr


def test_tools_fail_cleanly_without_a_daemon(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert tools.main(["get", "8", missing]) == 1
    assert tools.main(["ping", f"127.0.0.1:{free_tcp_port()}"]) == 1
    err = capsys.readouterr().err
    assert "prngd get:" in err and "no such socket" in err and "refused" in err


def test_usage_errors_exit_2(capsys):
    for argv in (["get"], ["get", "-3"], ["get", "8", "--hex", "--base64"], ["frobnicate"], []):
        with pytest.raises(SystemExit) as e:
            tools.main(argv)
        assert e.value.code == 2, argv
