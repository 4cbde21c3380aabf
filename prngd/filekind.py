"""What is at a path, in words: the seed file, the exchange file and the pidfile
each refuse, in one line, to replace anything but their own kind of file."""

from __future__ import annotations

import stat

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link",
          stat.S_IFREG: "a regular file"}


def describe(mode: int) -> str:
    """'a FIFO', 'a directory'... for an st_mode (from lstat, so a symbolic link is named as one)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")
