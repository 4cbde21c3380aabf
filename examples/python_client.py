#!/usr/bin/env python3
"""Read 32 random bytes and the entropy estimate from prngd (or any EGD server).

    python3 examples/python_client.py /var/run/egd-pool
    python3 examples/python_client.py 127.0.0.1:708

Uses prngd's client library (`pip install prngd`, or PYTHONPATH=the source
tree).  The same with trio:

    async with await AsyncEGDClient.connect(path) as egd:
        key = await egd.read(32)
"""

import sys

from prngd.client import EGDClient, EGDError


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} SOCKET   (a Unix socket path or HOST:PORT)", file=sys.stderr)
        return 2
    try:
        with EGDClient(sys.argv[1], timeout=10) as egd:
            data = egd.read(32)  # 0x02: exactly 32 bytes
            bits = egd.entropy_level()  # 0x00: the daemon's estimate
    except EGDError as e:  # NoSocket, Refused, ShortReply, Timeout
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(data.hex())
    print(f"entropy level: {bits} bits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
