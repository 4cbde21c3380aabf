"""The VM generation counter (/dev/vmclock0): read from a regular file laid out as the device is."""

from __future__ import annotations

import json
import os
import struct

import trio

from prngd import seedfile, tasks, vmclock
from prngd.config import Settings
from prngd.identity import Identity
from prngd.pool import Pool
from prngd.server import Daemon
from test_admin import run_tool

PAGE = 4096


def write_page(path, *, generation=1, flags=vmclock.FLAG_VM_GEN_COUNTER_PRESENT, magic=vmclock.MAGIC,
               seq=2, size=PAGE) -> None:
    """struct vmclock_abi (include/uapi/linux/vmclock-abi.h) at the start of a zeroed page."""
    page = bytearray(size)
    struct.pack_into("<IIHBB", page, 0, magic, PAGE, 1, 0xFF, 0)  # magic, size, version, counter_id, time_type
    struct.pack_into("<I", page, 12, seq)
    struct.pack_into("<Q", page, 24, flags)
    struct.pack_into("<Q", page, 104, generation)
    with open(path, "wb") as f:
        f.write(page)


def restore(path, generation: int) -> None:
    """What a hypervisor does on a restore: seq_count odd, the counter, seq_count even again."""
    with open(path, "r+b") as f:
        seq = struct.unpack("<I", os.pread(f.fileno(), 4, 12))[0]
        os.pwrite(f.fileno(), struct.pack("<I", seq + 1), 12)
        os.pwrite(f.fileno(), struct.pack("<Q", generation), 104)
        os.pwrite(f.fileno(), struct.pack("<I", seq + 2), 12)


def test_reads_the_generation_counter(tmp_path):
    path = tmp_path / "vmclock0"
    write_page(path, generation=41)
    clock = vmclock.open_vmclock(str(path))
    assert clock is not None and not clock.notifies  # a regular file: checked, not polled
    assert clock.generation() == 41
    restore(path, 42)
    assert clock.generation() == 42  # the mapping is shared: the change shows without reopening
    clock.close()


def test_inactive_without_a_vmclock(tmp_path, caplog):
    caplog.set_level("DEBUG", "prngd")
    bad_magic = tmp_path / "bad-magic"
    write_page(bad_magic, magic=0x12345678)
    no_flag = tmp_path / "no-flag"
    write_page(no_flag, flags=vmclock.FLAG_NOTIFICATION_PRESENT)
    short = tmp_path / "short"
    short.write_bytes(bytes(64))
    assert vmclock.open_vmclock(str(bad_magic)) is None
    assert vmclock.open_vmclock(str(no_flag)) is None
    assert vmclock.open_vmclock(str(short)) is None
    assert vmclock.open_vmclock(str(tmp_path / "missing")) is None
    assert vmclock.open_vmclock("") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("not a vmclock" in m for m in messages)
    assert any("no VM generation counter" in m for m in messages)
    assert all(r.levelname == "DEBUG" for r in caplog.records)  # quietly


def test_a_seqlock_held_odd_gives_no_value_and_no_hang(tmp_path):
    path = tmp_path / "vmclock0"
    write_page(path, generation=5)
    clock = vmclock.open_vmclock(str(path))
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), struct.pack("<I", 3), 12)  # a hypervisor forever mid-update
    assert clock.generation() is None
    clock.close()


def test_pool_reseeds_once_on_a_changed_counter(tmp_path):
    path = tmp_path / "vmclock0"
    write_page(path, generation=7)
    clock = vmclock.open_vmclock(str(path))
    pool = Pool(seed_bits=0)
    pool.watch_generation("vmclock", clock.generation)
    assert pool.detectors() == ["boottime-gap", "realtime-jump", "vmclock"]
    reseeds = pool.stats()["reseeds"]
    assert pool.check_clocks() == []
    restore(path, 8)
    events = pool.check_clocks()
    assert len(events) == 1 and "VM generation counter changed 7 -> 8" in events[0]
    assert pool.check_clocks() == []
    assert pool.stats()["reseeds"] == reseeds + 1 and pool.stats()["clock_reseeds"] == 1
    clock.close()


def test_a_changed_counter_is_seen_at_the_next_refill():
    generation = [1]
    pool = Pool(seed_bits=0, buffer_size=4096)
    pool.watch_generation("vmclock", lambda: generation[0])
    pool.read(4000)
    reseeds = pool.stats()["reseeds"]
    generation[0] = 2
    pool.read(100)  # past the buffer: a refill, which compares the counter
    assert pool.stats()["reseeds"] == reseeds + 1
    assert len(pool.check_clocks()) == 1  # the event found at the refill, handed on once


async def test_daemon_reseeds_rewrites_the_seed_and_logs_one_line(tmp_path, caplog, autojump_clock):
    caplog.set_level("INFO", "prngd")
    device = tmp_path / "vmclock0"
    write_page(device, generation=100)
    pool = Pool(seed_bits=0)
    path = tmp_path / "seed"
    daemon = Daemon(Settings(seedfile=str(path), vmclock_device=str(device)), pool=pool)
    daemon._watch_vm_generation()
    assert daemon.status()["detectors"] == ["boottime-gap", "realtime-jump", "vmclock"]
    daemon.seed_state = seedfile.load_and_replace(str(path), pool, Identity(b"\x44" * 32))
    on_disk = path.read_bytes()
    saves = daemon.seed_state.saves
    reseeds = pool.stats()["reseeds"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tasks.clock_watch, daemon)
        await trio.sleep(12)
        assert path.read_bytes() == on_disk
        restore(device, 101)
        await trio.sleep(12)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "reseeded with fresh kernel randomness" in r.getMessage()]
    assert len(lines) == 1 and "VM generation counter changed 100 -> 101" in lines[0]
    assert pool.stats()["reseeds"] == reseeds + 1
    assert daemon.seed_state.saves == saves + 1 and path.read_bytes() != on_disk


def test_status_names_the_detectors(start_daemon, tmp_path):
    device = tmp_path / "vmclock0"
    write_page(device, generation=3)
    bad = tmp_path / "not-a-vmclock"
    write_page(bad, magic=0)
    for path, expected in ((device, ["boottime-gap", "realtime-jump", "vmclock"]),
                           (bad, ["boottime-gap", "realtime-jump"])):
        d = start_daemon(config=f"[pool]\nvmclock_device = {path}\n")
        out = run_tool("status", "--json", d.socket)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["detectors"] == expected
        text = run_tool("status", d.socket).stdout
        assert f"detectors:   {', '.join(expected)}; 0 resumes or restores seen" in text
        d.stop()
        assert "vmclock" not in d.log()  # inactive or active, nothing said at info level


class NotifyingClock:
    """Stands in for a device that notifies (NOTIFICATION_PRESENT): a pipe becomes readable on a change."""

    path = "<pipe>"
    notifies = True

    def __init__(self) -> None:
        self.fd, self.write_fd = os.pipe()
        self.value = 1
        self.acknowledged = 0

    def generation(self):
        return self.value

    def restore(self, value: int) -> None:
        self.value = value
        os.write(self.write_fd, b"!")

    def acknowledge(self) -> None:
        os.read(self.fd, 64)  # as read() on the device re-arms its poll
        self.acknowledged += 1


async def test_a_notifying_device_is_acted_on_at_once(caplog):
    caplog.set_level("INFO", "prngd")
    pool = Pool(seed_bits=0)
    daemon = Daemon(Settings(), pool=pool)
    daemon.vmclock = clock = NotifyingClock()
    pool.watch_generation("vmclock", clock.generation)
    checked = trio.Event()
    check = daemon.check_clocks

    async def check_and_tell():
        await check()
        checked.set()

    daemon.check_clocks = check_and_tell
    with trio.fail_after(10):  # the period below is an hour: only the notification can do it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tasks.clock_watch, daemon, 3600)
            await trio.sleep(0)
            clock.restore(2)
            await checked.wait()
            nursery.cancel_scope.cancel()
    assert clock.acknowledged == 1 and pool.stats()["clock_reseeds"] == 1
    assert [r.getMessage() for r in caplog.records if "VM generation counter changed 1 -> 2" in r.getMessage()]
    os.close(clock.fd)
    os.close(clock.write_fd)


async def test_a_device_that_cannot_be_polled_falls_back_to_the_period(tmp_path, caplog):
    caplog.set_level("DEBUG", "prngd")
    path = tmp_path / "vmclock0"
    write_page(path, generation=1, flags=vmclock.FLAG_VM_GEN_COUNTER_PRESENT | vmclock.FLAG_NOTIFICATION_PRESENT)
    daemon = Daemon(Settings(vmclock_device=str(path)), pool=Pool(seed_bits=0))
    daemon._watch_vm_generation()
    assert daemon.vmclock is not None and not daemon.vmclock.notifies  # a regular file never notifies
    daemon.vmclock.notifies = True  # as a kernel that says so but has no poll for it
    with trio.fail_after(10):
        await tasks.vmclock_notifications(daemon)  # returns (epoll refuses a regular file): no spinning
    assert any("cannot be polled" in r.getMessage() for r in caplog.records)
