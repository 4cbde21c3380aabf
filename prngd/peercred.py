"""Who is at the other end of a Unix socket, as the kernel tells it (SO_PEERCRED).

For a server, the process that connected; for a client, the one that called
listen().  Never the peer's own word.  Standard library only; imports nothing of prngd.
"""

from __future__ import annotations

import socket
import struct

UCRED = struct.Struct("=iii")  # struct ucred: pid, uid, gid (read signed)
_SOL_SOCKET, _SO_PEERCRED = socket.SOL_SOCKET, socket.SO_PEERCRED


def credentials(sock) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the peer; None where the kernel has none to give (not a Unix socket, closed).

    pid is 0 when the peer is in a pid namespace we cannot see."""
    try:
        creds = sock.getsockopt(_SOL_SOCKET, _SO_PEERCRED, UCRED.size)
    except OSError:
        return None
    return UCRED.unpack(creds) if len(creds) == UCRED.size else None


def peer_uid(sock) -> int | None:
    """The peer's uid, or None.  Read at every accept: kept to one system call and one unpack."""
    try:
        creds = sock.getsockopt(_SOL_SOCKET, _SO_PEERCRED, UCRED.size)
    except OSError:
        return None
    return UCRED.unpack(creds)[1] if len(creds) == UCRED.size else None
