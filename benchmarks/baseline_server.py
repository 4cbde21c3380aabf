"""The baseline: minimal trio EGD servers answering every request from a constant buffer.

    python3 -m benchmarks.baseline_server [--mode raw|stream] UNIX_PATH [127.0.0.1:PORT]

They parse just enough of 00 / 01 N / 02 N to answer with the right lengths
(pipelined requests included; any other byte closes the connection) and do
nothing else: no randomness, no accounting, no logging.  Whatever prngd does
beyond this is what its ratio to the baseline measures.

- `raw` (the headline baseline, the faster one): trio on raw non-blocking
  sockets; recv/send are tried first and `trio.lowlevel.wait_readable` /
  `wait_writable` only park the task when the socket would block.
- `stream`: the same on trio's `SocketStream` (`receive_some` / `send_all`).

It prints "serving on ..." on stderr once it listens.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import trio

BUF = bytes(range(256))                                   # the constant "random" bytes
LEVEL = (4096).to_bytes(4, "big")                         # 00: a constant entropy level
NONBLOCKING = [bytes((n,)) + BUF[:n] for n in range(256)]  # 01 N: count byte + N bytes
BLOCKING = [BUF[:n] for n in range(256)]                  # 02 N: N bytes


def answer(data: bytes) -> tuple[bytes | None, bytes]:
    """Replies to every complete request in `data` (one buffer), and the incomplete rest.

    None instead of the replies means an unknown command: close the connection.
    """
    out = []
    i, end = 0, len(data)
    while i < end:
        cmd = data[i]
        if cmd == 0:
            out.append(LEVEL)
            i += 1
        elif cmd == 1 or cmd == 2:
            if i + 1 >= end:
                break
            out.append((NONBLOCKING if cmd == 1 else BLOCKING)[data[i + 1]])
            i += 2
        else:
            return None, b""
    return b"".join(out), data[i:]


def listeners(addresses: list[str]) -> list[socket.socket]:
    socks = []
    for address in addresses:
        if address.startswith("/") or ":" not in address:
            if os.path.exists(address):
                os.unlink(address)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(address)
        else:
            host, _, port = address.rpartition(":")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
        s.listen(4096)
        s.setblocking(False)
        socks.append(s)
    return socks


# ---------------------------------------------------------------- raw sockets

async def raw_connection(sock: socket.socket) -> None:
    pending = b""
    with sock:
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError:
                return
            if not data:
                return
            out, pending = answer(pending + data if pending else data)
            if out is None:
                return
            while out:
                try:
                    sent = sock.send(out)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except OSError:
                    return
                out = out[sent:]


async def raw_accept(listener: socket.socket, nursery: trio.Nursery) -> None:
    tcp = listener.family == socket.AF_INET
    while True:
        await trio.lowlevel.wait_readable(listener)
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. EMFILE: wait for the next round
                break
            sock.setblocking(False)
            if tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(raw_connection, sock)


async def serve_raw(socks: list[socket.socket], ready) -> None:
    async with trio.open_nursery() as nursery:
        for s in socks:
            nursery.start_soon(raw_accept, s, nursery)
        ready()


# ---------------------------------------------------------------- SocketStream

async def stream_connection(stream: trio.SocketStream) -> None:
    pending = b""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            out, pending = answer(pending + data if pending else data)
            if out is None:
                return
            try:
                await stream.send_all(out)
            except trio.BrokenResourceError:
                return


async def serve_stream(socks: list[socket.socket], ready) -> None:
    trio_listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, stream_connection, trio_listeners)
        ready()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.baseline_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("raw", "stream"), default="raw")
    parser.add_argument("addresses", nargs="+", help="Unix socket path or 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    socks = listeners(args.addresses)

    def ready() -> None:
        print(f"baseline ({args.mode}) serving on {' '.join(args.addresses)}", file=sys.stderr, flush=True)

    try:
        trio.run(serve_raw if args.mode == "raw" else serve_stream, socks, ready)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
