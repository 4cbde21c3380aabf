"""feed-kernel: the unprivileged path always (stand-in files), the real RNDADDENTROPY where this runs as root."""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from conftest import NOBODY_UID, ROOT, Daemon, fork_as_nobody, recv_exact
from prngd import client, feedkernel
from prngd.feedkernel import RNDADDENTROPY, KernelFeeder


class FakeEGD:
    """Stands in for EGDClient: counts bytes out, claims `level` bits, listens as `uid` (None: TCP)."""

    def __init__(self, level: int = 4096, fail: bool = False, uid: int | None = 0):
        self.level, self.fail, self.reads, self.uid = level, fail, [], uid
        self.address = "/fake/egd-pool" if uid is not None else "127.0.0.1:708"

    def __call__(self):  # the feeder's connect()
        if self.fail:
            raise client.Refused("127.0.0.1:1: connection refused (nobody is listening)")
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def read(self, n):
        self.reads.append(n)
        return bytes(i % 251 for i in range(n))

    def entropy_level(self):
        return self.level

    def peer_uid(self):
        return self.uid


def denied(fd, request, arg, mutate=False):
    raise PermissionError(errno.EPERM, "Operation not permitted")


RNDRESEEDCRNG = (ord("R") << 8) | 0x07  # _IO('R', 0x07): no direction, no size


class RecordingIoctl:
    def __init__(self):
        self.calls = []
        self.crng_reseeds = 0

    def __call__(self, fd, request, arg, mutate=False):
        if request == RNDRESEEDCRNG:
            assert arg == 0
            self.crng_reseeds += 1
            return 0
        assert request == RNDADDENTROPY
        count, size = struct.unpack_from("ii", arg)
        self.calls.append((count, bytes(arg[8:8 + size])))
        assert len(arg) == 8 + size
        return 0


@pytest.fixture
def kernel(tmp_path):
    """Stand-ins for entropy_avail, write_wakeup_threshold and /dev/urandom."""
    avail, threshold, urandom = tmp_path / "entropy_avail", tmp_path / "write_wakeup_threshold", tmp_path / "urandom"
    avail.write_text("256\n")
    threshold.write_text("256\n")
    urandom.write_bytes(b"")
    return {"entropy_avail": str(avail), "threshold": str(threshold), "urandom": str(urandom)}


def test_ioctl_number_and_argument_layout():
    # _IOW('R', 0x03, int[2]): direction write (1 << 30), size 8 (<< 16), type 'R' (<< 8), number 3
    assert RNDADDENTROPY == (1 << 30) | (8 << 16) | (ord("R") << 8) | 0x03
    arg = feedkernel.rand_pool_info(b"\x01\x02\x03", 24)
    assert isinstance(arg, bytearray)  # passed in place by fcntl.ioctl: no 1024-byte limit
    assert struct.unpack_from("ii", arg) == (24, 3) and arg[8:] == b"\x01\x02\x03"
    assert feedkernel.RNDRESEEDCRNG == RNDRESEEDCRNG


def test_unprivileged_writes_without_credit(kernel):
    egd = FakeEGD()
    f = KernelFeeder(egd, ioctl=denied, **kernel)
    assert not f.credit
    assert "without credit" in f.describe() and "Operation not permitted" in f.describe()
    fed = f.feed(48)
    assert fed.nbytes == 48 and fed.credited_bits == 0
    assert open(kernel["urandom"], "rb").read() == egd.read(48)
    f.feed(10)
    assert os.path.getsize(kernel["urandom"]) == 58, "each feed adds to the device, none replaces"


def test_privileged_feeds_credit_no_more_than_the_server_holds(kernel):
    ioctl = RecordingIoctl()
    f = KernelFeeder(FakeEGD(level=100), ioctl=ioctl, **kernel)
    assert f.credit and "with credit via RNDADDENTROPY" in f.describe()
    assert ioctl.calls == [(0, b"")], "the probe adds nothing"
    fed = f.feed(32)
    assert fed.credited_bits == 100  # 256 bits of data, but the server claims 100
    assert ioctl.calls[-1] == (100, FakeEGD().read(32))
    f2 = KernelFeeder(FakeEGD(level=1 << 20), ioctl=ioctl, **kernel)
    assert f2.feed(600).credited_bits == 8 * feedkernel.MAX_FEED  # one feed is capped
    assert os.path.getsize(kernel["urandom"]) == 0, "credited bytes go through the ioctl only"


def test_no_credit_flag_wins_over_privilege(kernel):
    ioctl = RecordingIoctl()
    f = KernelFeeder(FakeEGD(), ioctl=ioctl, credit=False, **kernel)
    assert not f.credit and "--no-credit" in f.describe()
    f.feed(16)
    assert ioctl.calls == [] and os.path.getsize(kernel["urandom"]) == 16


def test_a_regular_file_cannot_take_the_ioctl(kernel):
    # The real fcntl.ioctl on a stand-in file fails (ENOTTY): no credit, and said why.
    f = KernelFeeder(FakeEGD(), **kernel)
    assert not f.credit and "RNDADDENTROPY" in f.why


@pytest.mark.parametrize("avail,threshold,want", [
    ("256", "256", 0),     # Linux >= 5.18 once initialised: never asks
    ("3000", "1024", 0),
    ("100", "256", 20),    # 156 bits short: 20 bytes
    ("0", "100000", feedkernel.MAX_FEED),
    ("junk", "256", 0),
])
def test_shortfall(kernel, avail, threshold, want):
    open(kernel["entropy_avail"], "w").write(avail)
    open(kernel["threshold"], "w").write(threshold)
    assert KernelFeeder(FakeEGD(), ioctl=denied, **kernel).shortfall_bytes() == want


def test_missing_proc_files_mean_no_shortfall(kernel, tmp_path):
    kernel["entropy_avail"] = str(tmp_path / "absent")
    f = KernelFeeder(FakeEGD(), ioctl=denied, **kernel)
    assert f.shortfall_bytes() == 0 and f.feed(8).entropy_avail_before is None


class FakeTime:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_run_feeds_at_the_interval_when_the_kernel_never_asks(kernel):
    egd, t = FakeEGD(), FakeTime()
    f = KernelFeeder(egd, ioctl=denied, **kernel)
    f.run(interval=60, poll=2, nbytes=64, sleep=t.sleep, clock=t.clock, rounds=91)  # 180 s of checks
    assert egd.reads == [64, 64, 64, 64]  # at 0, 60, 120 and 180 s
    assert max(t.sleeps) <= 2


def test_run_feeds_the_shortfall_at_once(kernel):
    egd, t = FakeEGD(), FakeTime()
    f = KernelFeeder(egd, ioctl=denied, **kernel)
    open(kernel["entropy_avail"], "w").write("0")
    open(kernel["threshold"], "w").write("800")
    f.run(interval=60, poll=2, nbytes=64, sleep=t.sleep, clock=t.clock, rounds=3)
    assert egd.reads == [100, 100, 100]  # the regular feed grows to the shortfall; then the shortfall alone


def test_run_survives_a_missing_server(kernel, caplog):
    t = FakeTime()
    f = KernelFeeder(FakeEGD(fail=True), ioctl=denied, **kernel)
    f.run(interval=1, poll=1, sleep=t.sleep, clock=t.clock, rounds=3)
    assert caplog.text.count("cannot feed the kernel") == 3


# ---------------------------------------------------------------- the tool, with a real daemon

def tool(*args, timeout=30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "prngd", "feed-kernel", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_once_without_credit(start_daemon, kernel):
    d = start_daemon()
    out = tool(d.socket, "--once", "--bytes", "40", "--entropy-avail", kernel["entropy_avail"],
               "--threshold-file", kernel["threshold"], "--urandom", kernel["urandom"])
    assert out.returncode == 0, out.stderr
    assert f"writing to {kernel['urandom']} without credit" in out.stdout
    assert "fed 40 bytes" in out.stdout and "without credit" in out.stdout.splitlines()[-1]
    assert os.path.getsize(kernel["urandom"]) == 40


def test_once_with_no_daemon_fails_cleanly(tmp_path, kernel):
    out = tool(str(tmp_path / "missing"), "--once", "--no-credit", "--urandom", kernel["urandom"])
    assert out.returncode == 1 and "no such socket" in out.stderr


def test_the_loop_says_once_what_it_does(start_daemon, kernel):
    d = start_daemon()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "prngd", "feed-kernel", d.socket, "--no-credit",
                             "--urandom", kernel["urandom"], "--entropy-avail", kernel["entropy_avail"],
                             "--threshold-file", kernel["threshold"]],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "without credit (--no-credit given)" in line and "every 60s" in line, line
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


def real_kernel_credit_allowed() -> str | None:
    """None when RNDADDENTROPY works here, else why not."""
    if os.geteuid() != 0:
        return "not root: RNDADDENTROPY needs CAP_SYS_ADMIN"
    if not os.path.exists(feedkernel.URANDOM):
        return "no /dev/urandom"
    probe = KernelFeeder(FakeEGD())
    return None if probe.credit else f"the kernel refuses it here ({probe.why})"


def test_privileged_path_on_the_real_kernel(start_daemon):
    why = real_kernel_credit_allowed()
    if why:
        pytest.skip(why)
    d = start_daemon()
    f = KernelFeeder(lambda: client.EGDClient(d.socket))
    fed = f.feed(8)  # a few bytes from the daemon, credited through the real ioctl
    assert fed.nbytes == 8 and 0 < fed.credited_bits <= 64
    assert fed.entropy_avail_after is not None
    out = tool(d.socket, "--once", "--bytes", "8")
    assert out.returncode == 0, out.stderr
    assert "with credit via RNDADDENTROPY on /dev/urandom" in out.stdout
    assert "fed 8 bytes" in out.stdout and "with credit (" in out.stdout


# ---------------------------------------------------------------- whose claim is credited

def test_only_a_unix_server_of_root_or_a_trusted_uid_is_credited(kernel):
    ioctl = RecordingIoctl()
    data = FakeEGD().read(16)
    cases = [(FakeEGD(uid=0), (), 128, None), (FakeEGD(uid=1000), (), 0, "runs as uid 1000, neither root nor trusted"),
             (FakeEGD(uid=1000), (1000,), 128, None), (FakeEGD(uid=None), (0, 1000), 0, "is not a Unix socket")]
    for egd, trusted, bits, why in cases:
        fed = KernelFeeder(egd, ioctl=ioctl, trusted_uids=trusted, **kernel).feed(16)
        # Untrusted bytes still reach the kernel, through the ioctl with 0 bits: mixed, not credited.
        assert ioctl.calls[-1] == (bits, data) and fed.credited_bits == bits
        assert (fed.distrust is None) if why is None else (why in fed.distrust), fed.distrust


def serve_egd(path: str, ready_fd: int) -> int:
    """A minimal EGD server on `path`, claiming 4096 bits: 0x00 and 0x02 only, one client at a time."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    os.write(ready_fd, b"listening\n")
    while True:
        c, _ = s.accept()
        with c:
            while cmd := c.recv(1):
                if cmd == b"\x00":
                    c.sendall((4096).to_bytes(4, "big"))
                elif cmd == b"\x02":
                    c.sendall(os.urandom(recv_exact(c, 1)[0]))
                else:
                    break


@pytest.fixture
def egd_server_as():
    """egd_server_as(uid, path): a fake EGD server forked to listen on `path` as root (0) or as nobody."""
    children = []

    def start(uid: int, path: str) -> int:
        if uid == NOBODY_UID:
            pid, r = fork_as_nobody(lambda w: serve_egd(path, w))
        else:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    serve_egd(path, w)
                finally:
                    os._exit(99)
            os.close(w)
        children.append(pid)
        with os.fdopen(r, "rb") as f:
            assert f.readline() == b"listening\n"
        return pid

    yield start
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="serving as another uid needs root")


@needs_root
def test_a_server_listening_as_nobody_is_not_credited_and_one_as_root_is(open_dir, kernel, egd_server_as):
    """SO_PEERCRED of the client's socket names the listener's uid, whatever the server says of itself."""
    directory = open_dir / "sockets"
    directory.mkdir()
    directory.chmod(0o1777)  # nobody binds its socket here
    nobody, root = str(directory / "nobody.sock"), str(directory / "root.sock")
    egd_server_as(NOBODY_UID, nobody)
    egd_server_as(0, root)
    assert os.stat(nobody).st_uid == NOBODY_UID
    ioctl = RecordingIoctl()

    fed = KernelFeeder(lambda: client.EGDClient(nobody), ioctl=ioctl, **kernel).feed(32)
    assert ioctl.calls[-1][0] == 0 and len(ioctl.calls[-1][1]) == 32 and fed.credited_bits == 0
    assert fed.distrust == f"the server on {nobody} runs as uid {NOBODY_UID}, neither root nor trusted (--trust-uid)"

    fed = KernelFeeder(lambda: client.EGDClient(root), ioctl=ioctl, **kernel).feed(32)
    assert ioctl.calls[-1][0] == 256 and fed.credited_bits == 256 and fed.distrust is None

    trusting = KernelFeeder(lambda: client.EGDClient(nobody), ioctl=ioctl, trusted_uids=[NOBODY_UID], **kernel)
    assert trusting.feed(32).credited_bits == 256 and ioctl.calls[-1][0] == 256


@needs_root
def test_once_says_in_one_line_that_an_untrusted_server_is_mixed_with_0_bits(open_dir, egd_server_as):
    why = real_kernel_credit_allowed()
    if why:
        pytest.skip(why)  # the message is about a feeder that could credit
    directory = open_dir / "sockets"
    directory.mkdir()
    directory.chmod(0o1777)
    nobody = str(directory / "nobody.sock")
    egd_server_as(NOBODY_UID, nobody)
    out = tool(nobody, "--once", "--bytes", "8")  # 8 bytes mixed into this kernel with 0 bits: credits nothing
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith(
        f"fed 8 bytes from {nobody} without credit (the server on {nobody} runs as uid {NOBODY_UID}, neither root "
        "nor trusted (--trust-uid): mixed in with 0 bits)"), out.stdout
    assert tool(nobody, "--once", "--bytes", "8", "--trust-uid", "notauser").returncode == 2


def test_the_loop_says_once_that_it_does_not_credit_and_again_when_it_does(kernel, caplog):
    caplog.set_level("INFO")
    egd, t = FakeEGD(uid=1000), FakeTime()

    def sleep(s):
        t.sleep(s)
        if len(egd.reads) == 3:
            egd.uid = 0  # the daemon is back, as root

    KernelFeeder(egd, ioctl=RecordingIoctl(), **kernel).run(interval=2, poll=2, sleep=sleep, clock=t.clock, rounds=6)
    said = [r.getMessage() for r in caplog.records if "credit" in r.getMessage()]
    assert len(egd.reads) == 6 and said == [
        "not crediting: the server on /fake/egd-pool runs as uid 1000, neither root nor trusted (--trust-uid); "
        "mixing its bytes in with 0 bits", "crediting again: the server is trusted"]


# ---------------------------------------------------------------- after a restore

def test_the_loop_follows_a_restore_with_a_feed_and_a_crng_reseed(kernel, caplog):
    caplog.set_level("INFO")
    egd, t, ioctl = FakeEGD(), FakeTime(), RecordingIoctl()
    f = KernelFeeder(egd, ioctl=ioctl, **kernel)
    # (pid, restore_generation) as the daemon's status says it, one a check; None: could not be read.
    said = iter([(7, 0), (7, 0), (7, 0), (7, 1), None, (7, 1), (8, 0), (8, 3), (8, 3)])
    f.run(interval=600, poll=2, nbytes=48, sleep=t.sleep, clock=t.clock, rounds=8, restores=lambda: next(said))
    assert ioctl.crng_reseeds == 2  # generation 0 -> 1, and 0 -> 3 after the daemon restarted (pid 8)
    assert egd.reads == [48, 48, 48]  # the regular feed at start, then one at each restore
    lines = [r.getMessage() for r in caplog.records if "after a restore" in r.getMessage()]
    assert lines == ["the daemon (pid 7) reseeded after a restore (restore generation 1): fed 48 bytes, 384 bits "
                     "credited; the kernel's generator reseeded (RNDRESEEDCRNG)",
                     "the daemon (pid 8) reseeded after a restore (restore generation 3): fed 48 bytes, 384 bits "
                     "credited; the kernel's generator reseeded (RNDRESEEDCRNG)"]


def test_a_restore_whose_feed_fails_is_followed_at_the_next_check(kernel):
    egd, t, ioctl = FakeEGD(fail=True), FakeTime(), RecordingIoctl()

    def sleep(s):
        t.sleep(s)
        egd.fail = False  # the EGD socket answers again

    said = iter([(7, 0), (7, 1), (7, 1), (7, 1)])
    KernelFeeder(egd, ioctl=ioctl, **kernel).run(interval=600, poll=2, sleep=sleep, clock=t.clock, rounds=3,
                                                 restores=lambda: next(said))
    assert ioctl.crng_reseeds == 1 and len(egd.reads) == 1


def test_a_daemon_restart_is_not_a_restore(kernel):
    egd, t, ioctl = FakeEGD(), FakeTime(), RecordingIoctl()
    said = iter([(7, 4), (9, 0), (9, 0)])
    KernelFeeder(egd, ioctl=ioctl, **kernel).run(interval=600, poll=2, sleep=t.sleep, clock=t.clock, rounds=2,
                                                 restores=lambda: next(said))
    assert ioctl.crng_reseeds == 0 and len(egd.reads) == 1


def test_feed_kernel_follows_prngd_reseed_on_a_real_daemon(start_daemon, kernel):
    d = start_daemon()
    feeder = Daemon(["feed-kernel", d.socket, "--no-credit", "--poll", "0.1", "--interval", "10000",
                     "--urandom", kernel["urandom"], "--entropy-avail", kernel["entropy_avail"],
                     "--threshold-file", kernel["threshold"]], None)
    try:
        feeder.wait_for_line(f"following the daemon's restores through {d.socket}.admin (pid {d.pid}, restore "
                             "generation 0)")
        before = os.path.getsize(kernel["urandom"])  # 64 once the regular feed at start is done
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run([sys.executable, "-m", "prngd", "reseed", d.socket], capture_output=True, text=True,
                              env=env, timeout=30)
        assert done.returncode == 0, done.stderr
        line = feeder.wait_for_line("reseeded after a restore")
        assert line.endswith(f"the daemon (pid {d.pid}) reseeded after a restore (restore generation 1): fed 64 "
                             "bytes, 0 bits credited; the kernel's generator not reseeded (--no-credit given)"), line
        assert os.path.getsize(kernel["urandom"]) >= before + 64
    finally:
        feeder.stop()
