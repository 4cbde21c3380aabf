"""`-s PATH` never destroys what prngd did not write (issue 12 item 1, issue 19, issue 20 finding 5).

A real daemon pointed at a text file, a FIFO, a device, a directory, an
oversized file, a symbolic link, a file with a second hard link, or a key
that merely looks like PRNGD's seed (4096 random bytes that are not where
PRNGD leaves its seed) refuses to start with one line naming the path, what
is there and how to feed it instead, and leaves the thing byte-identical,
mode and owner included.  A seed file of the original PRNGD (named
prngd-seed, or of mode 0600, owned by root or prngd's user) is migrated:
mixed without credit, replaced in our format, and the log says "replaced"
only once it was.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, egd_read
from prngd import identity
from prngd.seedfile import PRNGD_SEED_SIZE, SEED_BYTES, encode, parse

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mount)")


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
            return ("file", f.read(), st.st_size, st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, st.st_ino)
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


# ---------------------------------------------------------------- keys that look like PRNGD's seed (issue 19)

def _key(path, mode, uid=0):
    """A disk keyfile: 4096 random bytes, exactly the size and look of PRNGD's seed."""
    path.write_bytes(os.urandom(PRNGD_SEED_SIZE))
    os.chmod(path, mode)
    os.chown(path, uid, uid)


def _hard_linked_seed(path, tmp_path):
    """prngd's own creditable seed, with a second name that would keep it after the replacement."""
    path.write_bytes(encode(os.urandom(SEED_BYTES), True, identity.machine_identity().fingerprint))
    os.chmod(path, 0o600)
    os.link(path, tmp_path / "kept-copy")


@needs_root
@pytest.mark.parametrize("name, make, words", [
    ("luks.key", lambda p, t: _key(p, 0o400), "4096 bytes of random data (mode 0400, owner uid 0)"),
    ("key-0644", lambda p, t: _key(p, 0o644), "(mode 0644, owner uid 0)"),
    ("key-nobody", lambda p, t: _key(p, 0o600, uid=65534), "(mode 0600, owner uid 65534)"),
    ("prngd-seed-nobody", lambda p, t: _key(p, 0o600, uid=65534), "(mode 0600, owner uid 65534)"),
    ("hard-linked-key", lambda p, t: (_key(p, 0o600), os.link(p, t / "kept-copy")), "has 2 hard links"),
    ("hard-linked-seed", _hard_linked_seed, "has 2 hard links"),
])
def test_a_key_or_a_kept_seed_is_refused_and_left_as_it_was(start_daemon, tmp_path, name, make, words):
    """`-s luks.key`: no 4096-byte random file is taken for PRNGD's seed unless it is where PRNGD leaves one."""
    path = tmp_path / name
    make(path, tmp_path)
    before = _state(path)
    d = start_daemon(seed=path, ready=False)
    line = _refused(d, path)
    assert words in line and "untouched" in line, line
    assert f"prngd add {path}" in line, line  # how to feed its bytes instead
    assert _state(path) == before  # bytes, mode, owner, links: as they were
    if (tmp_path / "kept-copy").exists():
        assert os.stat(tmp_path / "kept-copy").st_nlink == 2


@needs_root
def test_a_key_is_refused_before_u_gives_it_away(open_dir):
    """With -u, the seed's directory and file are given to the user: never before the file is known to be a seed."""
    tmp_path = open_dir  # one nobody may traverse: the refusal must not depend on the key being out of reach
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    key = directory / "luks.key"
    _key(key, 0o400)
    before, dir_before = _state(key), os.stat(directory)
    r = subprocess.run([sys.executable, "-m", "prngd", "-f", "-u", "nobody", "-s", str(key), str(tmp_path / "s")],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "random data" in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert _state(key) == before
    after = os.stat(directory)
    assert (after.st_uid, after.st_mode) == (dir_before.st_uid, dir_before.st_mode)


@needs_root
@pytest.mark.parametrize("name, mode", [("prngd-seed", 0o644), ("seed", 0o600)])
def test_prngd_seed_where_prngd_leaves_it_is_migrated(start_daemon, tmp_path, name, mode):
    """PRNGD's compiled-in name (any mode), or mode 0600 (what PRNGD sets), owned by root."""
    path = tmp_path / name
    _key(path, mode)
    d = start_daemon(seed=path)
    line = d.wait_for_line("seed file")
    assert "a seed file of the original PRNGD" in line and "replaced in prngd's format" in line, line
    assert parse(path.read_bytes()).version == 2 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert d.stop() == 0


@pytest.fixture
def full_disk(tmp_path):
    """A 2-page tmpfs: PRNGD's 4096-byte seed and a filler fill it, so no save fits."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@needs_root
def test_full_disk_prngd_seed_is_not_said_to_be_replaced(start_daemon, full_disk):
    """Issue 19: on a full disk the log said "replaced in prngd's format" although the save failed."""
    path = full_disk / "prngd-seed"
    _key(path, 0o600)
    try:
        (full_disk / "filler").write_bytes(b"\xff" * 8192)
    except OSError:
        pass  # as much as fits: the disk is full
    before = _state(path)
    d = start_daemon(seed=path)
    line = d.wait_for_line("seed file " + str(path) + ": loaded")
    assert "No space left on device" in d.wait_for_line("save failed")
    assert "replaced in prngd's format" not in line, line
    assert "not yet replaced" in line and "WARNING" in line, line
    assert len(egd_read(d.socket, 16)) == 16  # serving goes on
    assert d.stop() == 0
    assert "replaced in prngd's format" not in d.log()
    assert _state(path) == before  # PRNGD's seed stays whole, to be replaced when there is room
