"""`SOCKET,pr`: every read on such a socket is preceded by a reseed from the kernel; other sockets are not."""

from __future__ import annotations

import json

import pytest

from prngd import config, egd
from prngd.listeners import StartupError, open_listeners
from test_admin import run_tool
from test_pool import FakeClocks, FakeRandom, make_pool
from conftest import connect, egd_read, recv_exact


def pools(generator="chacha20"):
    """Two pools in the same state, each with its own counted supply of fresh input."""
    made = []
    for _ in range(2):
        fresh = FakeRandom(b"fresh")
        pool = make_pool(generator, os_random=FakeRandom(), fresh_random=fresh, clocks=FakeClocks(), seed_bits=0)
        made.append((pool, fresh))
    return made


@pytest.mark.parametrize("generator", ["chacha20", "hmac-drbg"])
def test_refresh_mixes_fresh_input_before_the_next_read(generator):
    (plain, plain_fresh), (pr, pr_fresh) = pools(generator)
    assert plain.read(32) == pr.read(32)  # same state, same output
    before = plain_fresh.calls, pr_fresh.calls
    a = plain.read(32)
    pr.refresh()
    b = pr.read(32)
    assert a != b
    assert plain_fresh.calls == before[0]  # served from what was buffered: nothing fresh
    assert pr_fresh.calls == before[1] + 1  # the refresh: 32 fresh bytes mixed in before this read
    for _ in range(3):
        pr.refresh()
        pr.read(16)
    assert pr_fresh.calls == before[1] + 4  # one reseed a read
    assert pr.stats()["pr_reseeds"] == 4 and plain.stats()["pr_reseeds"] == 0


def test_refresh_changes_the_key_and_drops_the_buffer():
    (pool, _), _ = pools()
    pool.read(10)
    gen = pool._gen
    key = bytes(gen._key)
    assert any(gen._buf[gen._pos:])  # keystream waiting
    pool.refresh()
    assert not any(gen._buf)  # discarded
    pool.read(10)
    assert bytes(gen._key) != key


def test_pr_option_parses_everywhere_a_socket_is_named(tmp_path):
    assert egd.parse_address("/run/egd-pool-pr,pr").path == "/run/egd-pool-pr"
    assert egd.parse_address("/run/egd-pool-pr,pr").options == ("pr",)
    assert egd.parse_address("tcp/localhost:708,pr").options == ("pr",)
    assert egd.parse_address("/tmp/a,b").path == "/tmp/a,b"  # not an option: part of the path
    with pytest.raises(ValueError, match="unknown socket option 'fast'"):
        egd.parse_address("localhost:708,fast")
    settings = config.Settings(**config.parse_ini("[prngd]\nsockets = ./pool,pr 127.0.0.1:7088,pr\n"))
    assert settings.sockets == ["./pool,pr", "127.0.0.1:7088,pr"]
    resolved = config.resolve_paths(settings, str(tmp_path))
    assert resolved.sockets == [f"{tmp_path}/pool,pr", "127.0.0.1:7088,pr"]
    assert config.admin_socket_for(resolved.sockets[0]) == f"{tmp_path}/pool.admin"
    listeners = open_listeners(resolved.replace(sockets=[f"{tmp_path}/pool,pr", f"{tmp_path}/plain"]))
    try:
        assert [(lst.path, lst.pr) for lst in listeners] == [(f"{tmp_path}/pool", True), (f"{tmp_path}/plain", False)]
    finally:
        for lst in listeners:
            lst.sock.close()
    with pytest.raises(StartupError, match="unknown socket option"):
        open_listeners(config.Settings(sockets=["127.0.0.1:7089,fast"]))


def pool_status(d) -> dict:
    out = run_tool("status", "--json", d.socket)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_read_on_a_pr_socket_is_preceded_by_a_reseed(start_daemon, tmp_path):
    pr_path = str(tmp_path / "egd-pr")
    d = start_daemon(extra_sockets=[pr_path + ",pr"])
    status = pool_status(d)
    assert status["sockets"] == [d.socket, pr_path + ",pr"]
    base = status["pool"]["pr_reseeds"]
    assert base == 0
    for _ in range(5):
        egd_read(d.socket, 32)  # plain socket: no reseed per read
    egd_read(d.socket, 32, blocking=False)
    assert pool_status(d)["pool"]["pr_reseeds"] == 0
    first = egd_read(pr_path, 32)  # the lone-read fast path
    second = egd_read(pr_path, 32, blocking=False)
    assert first != second[:32]
    with connect(pr_path) as s:  # pipelined: Connection.answer
        s.sendall(b"\x02\x10\x01\x10\x00\x02\x08")
        recv_exact(s, 16 + 17 + 4 + 8)
    assert pool_status(d)["pool"]["pr_reseeds"] == 5
    assert egd.parse_address(pr_path).path == pr_path


def vsock_unavailable() -> str | None:
    import socket

    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        return "this Python has no socket.AF_VSOCK"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((egd.VSOCK_CID_ANY, 0))
    except OSError as e:
        return f"cannot bind AF_VSOCK here: {e.strerror} (no vhost_vsock or vsock transport)"
    return None


def test_vsock_spelling_parses():
    a = egd.parse_address("vsock:708,pr")
    assert (a.cid, a.port, a.options, str(a)) == (egd.VSOCK_CID_ANY, 708, ("pr",), "vsock:708")
    assert egd.parse_address("vsock:2:708").cid == 2 and str(egd.parse_address("vsock:2:708")) == "vsock:2:708"
    for bad in ("vsock:", "vsock:x:708", "vsock:2:http"):
        with pytest.raises(ValueError):
            egd.parse_address(bad)


def test_a_vsock_listener_serves_or_fails_in_one_line(start_daemon, tmp_path):
    from conftest import free_tcp_port

    port = free_tcp_port()  # any number will do; one unlikely to be taken
    why = vsock_unavailable()
    d = start_daemon(extra_sockets=[f"vsock:{port}"], ready=why is None)
    if why is not None:
        assert d.proc.wait(20) != 0
        errors = [line for line in d.lines if "vsock" in line]
        assert len(errors) == 1 and "AF_VSOCK" in errors[0] and "Traceback" not in d.log()
        pytest.skip(f"vsock: {why}; checked the one-line failure instead")
    assert pool_status(d)["sockets"] == [d.socket, f"vsock:{port}"]
