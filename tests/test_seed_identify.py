"""`-s PATH` never destroys what prngd did not write (issue 12 item 1, the seed file).

A real daemon pointed at a text file, a FIFO, a device, a directory, an
oversized file or a symbolic link refuses to start with one line naming the
path and what is there, and leaves the thing byte-identical.  A seed file of
the original PRNGD is migrated: mixed without credit, replaced in our format.
"""

from __future__ import annotations

import os
import stat

import pytest

from conftest import egd_read
from prngd.seedfile import PRNGD_SEED_SIZE, parse


def _make(kind: str, path, tmp_path):
    if kind == "text":
        path.write_text("meeting notes: buy milk\n" * 20)
        return "a text file"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
        return "a FIFO"
    if kind == "directory":
        path.mkdir()
        (path / "keep").write_bytes(b"inside")
        return "a directory"
    if kind == "oversized":
        with open(path, "wb") as f:
            f.truncate(10 * 2**20)  # sparse: 10 MiB of it, nothing on disk
        return f"{10 * 2**20} bytes"
    if kind == "symlink":
        target = tmp_path / "real-seed"
        target.write_bytes(os.urandom(PRNGD_SEED_SIZE))
        path.symlink_to(target)
        return "symbolic link"
    raise AssertionError(kind)


def _state(path):
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", f.read(), st.st_size, st.st_mode, st.st_mtime_ns, st.st_ino)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", sorted(os.listdir(path)), st.st_mode, st.st_mtime_ns, st.st_ino)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), st.st_ino)
    return ("other", st.st_mode, st.st_rdev, st.st_ino, st.st_mtime_ns)


def _refused(d, path) -> str:
    rc = d.proc.wait(30)
    d.stop()
    assert rc == 1, d.log()
    assert "Traceback" not in d.log()
    errors = [line for line in d.lines if "ERROR" in line]
    assert len(errors) == 1, d.log()
    assert str(path) in errors[0]
    assert not os.path.exists(d.socket)  # never served
    return errors[0]


@pytest.mark.parametrize("kind", ["text", "fifo", "directory", "oversized", "symlink"])
def test_daemon_refuses_what_it_did_not_write(start_daemon, tmp_path, kind):
    path = tmp_path / "seed"
    words = _make(kind, path, tmp_path)
    before = _state(path)
    target_before = (tmp_path / "real-seed").read_bytes() if kind == "symlink" else None
    d = start_daemon(seed=path, ready=False)
    line = _refused(d, path)
    assert words in line and "untouched" in line
    assert _state(path) == before
    if target_before is not None:
        assert (tmp_path / "real-seed").read_bytes() == target_before
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in os.listdir(tmp_path) if not n.endswith(".tmp"))


def test_daemon_refuses_a_device(start_daemon, tmp_path):
    before = _state("/dev/zero")
    d = start_daemon(seed="/dev/zero", ready=False)
    assert "a character device" in _refused(d, "/dev/zero")
    assert _state("/dev/zero") == before


def test_prngd_seed_file_is_migrated(start_daemon, tmp_path):
    """`prngd -s /etc/prngd-seed` after PRNGD: mixed once without credit, replaced in our format."""
    path = tmp_path / "prngd-seed"
    path.write_bytes(os.urandom(PRNGD_SEED_SIZE))
    os.chmod(path, 0o600)
    d = start_daemon(seed=path)
    line = d.wait_for_line("seed file")
    assert "loaded 4096 bytes, not credited" in line and "PRNGD" in line
    replaced = parse(path.read_bytes())  # replaced before the first byte
    assert replaced.version == 2 and replaced.fingerprint is not None and replaced.credit
    assert len(egd_read(d.socket, 16)) == 16
    assert d.stop() == 0
    d2 = start_daemon(seed=path)
    assert "credited 256 bits" in d2.wait_for_line("seed file")
    assert d2.stop() == 0
