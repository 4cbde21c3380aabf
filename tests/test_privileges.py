"""Privilege drop (-u/--user) and the user entropy commands run as, with real daemon processes.

The daemon's directory is one every user may traverse (pytest's tmp_path sits
under a 0700 directory), since after the drop the daemon, and the commands
as nobody, must reach it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, connect, egd_entropy, egd_read, recv_exact
from prngd import identity, privileges, seedfile

NOBODY = pwd.getpwnam("nobody")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

# Commands report their own credentials: Uid, Gid and Groups lines of /proc/self/status.
IDS_CONFIG = """\
[sources]
system = no
jitter = no
command_interval = 600
[commands]
ids = 0.01 /bin/sh -c "grep -E '^(Uid|Gid|Groups):' /proc/self/status > {out}; echo done"
"""


def in_child(work) -> str:
    """What `work()` returns (or the exception it raises, as text) when run in a forked child:
    for what the test process itself must not do, such as switching to nobody."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(w, work().encode())
        except BaseException as e:
            os.write(w, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    return said


def status_fields(path: str) -> dict[str, list[str]]:
    fields = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def drop_out_dir(open_dir: Path) -> Path:
    """Where a command running as nobody may write its report."""
    out = open_dir / "out"
    out.mkdir()
    os.chmod(out, 0o1777)
    return out


@needs_root
def test_user_nobody_runs_as_nobody_and_saves_its_seed(start_daemon, open_dir):
    seed = open_dir / "seeds" / "seed"
    seed.parent.mkdir(mode=0o700)
    # Bound to this machine as root sees it: the daemon reads its identity before the drop.
    old = seedfile.encode(os.urandom(seedfile.SEED_BYTES), credit=True,
                          fingerprint=identity.machine_identity().fingerprint)
    seed.write_bytes(old)
    os.chmod(seed, 0o600)
    pidfile = open_dir / "prngd.pid"
    report = drop_out_dir(open_dir) / "ids"
    cfg = open_dir / "prngd.conf"  # where nobody may read it again at SIGHUP (tmp_path is root's, 0700)
    cfg.write_text(IDS_CONFIG.format(out=report))
    d = start_daemon("-u", "nobody", "-d", "-p", str(pidfile), "-c", str(cfg), seed=seed,
                     socket=str(open_dir / "egd.sock"))

    # The daemon: every uid and gid field is nobody's; groups are nobody's own (initgroups).
    st = status_fields(f"/proc/{d.pid}/status")
    assert st["Uid"] == [str(NOBODY.pw_uid)] * 4
    assert st["Gid"] == [str(NOBODY.pw_gid)] * 4
    assert {int(g) for g in st["Groups"]} == set(os.getgrouplist("nobody", NOBODY.pw_gid))
    assert st["CapEff"] == ["0000000000000000"] and st["CapPrm"] == ["0000000000000000"]
    # The root-owned seed was given to nobody before it was read, so it is still trusted and credited.
    d.wait_for_line(f"seed file {seed}: loaded {len(old)} bytes, credited 256 bits")
    assert int(pidfile.read_text()) == d.pid and pidfile.stat().st_uid == 0  # written as root
    assert len(egd_read(d.socket, 16)) == 16
    # 0x03 credit still goes by the peer's uid: root's write is credited.
    before = egd_entropy(d.socket)
    with connect(d.socket) as s:
        s.sendall(b"\x03\x07\xf8\xff" + os.urandom(255) + b"\x00")
        recv_exact(s, 4)  # the write was taken before this reply
    assert egd_entropy(d.socket) > before

    # A command runs as the daemon's user, with its groups.
    d.wait_for_line("DEBUG: command:ids: ")
    ids = status_fields(str(report))
    assert ids["Uid"] == [str(NOBODY.pw_uid)] * 4 and ids["Gid"] == [str(NOBODY.pw_gid)] * 4
    assert ids["Groups"] == st["Groups"]

    started = seed.read_bytes()
    assert started != old
    assert d.stop() == 0
    saved = os.stat(seed)
    assert seed.read_bytes() != started, "no save at stop"
    assert (saved.st_uid, saved.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert stat.S_IMODE(saved.st_mode) == 0o600
    assert os.stat(seed.parent).st_uid == NOBODY.pw_uid
    # What nobody may not remove from a root directory stays, said once; the next start replaces it.
    assert os.path.lexists(d.socket) and pidfile.exists()
    assert "left " in d.wait_for_line("may not remove them")
    d2 = start_daemon("-u", "nobody", "-p", str(pidfile), "-c", str(cfg), seed=seed, socket=d.socket)
    assert int(pidfile.read_text()) == d2.pid
    d2.wait_for_line(f"seed file {seed}: loaded {len(old)} bytes, credited 256 bits")
    assert d2.stop() == 0


@needs_root
def test_a_root_daemon_runs_its_commands_as_nobody(start_daemon, open_dir):
    report = drop_out_dir(open_dir) / "ids"
    d = start_daemon("-d", socket=str(open_dir / "egd.sock"), config=IDS_CONFIG.format(out=report))
    assert status_fields(f"/proc/{d.pid}/status")["Uid"][0] == "0"
    d.wait_for_line("DEBUG: command:ids: ")
    ids = status_fields(str(report))
    assert ids["Uid"] == [str(NOBODY.pw_uid)] * 4 and ids["Gid"] == [str(NOBODY.pw_gid)] * 4
    assert ids["Groups"] == []
    assert d.stop() == 0


@needs_root
def test_a_seed_directory_shared_with_other_files_is_not_given_away(start_daemon, open_dir):
    shared = open_dir / "shared"
    shared.mkdir()
    (shared / "unrelated").write_text("root's\n")
    d = start_daemon("-u", "nobody", seed=shared / "seed", socket=str(open_dir / "egd.sock"), ready=False)
    assert d.proc.wait(30) == 1
    d.stop()
    assert len(d.lines) == 1 and f"ERROR: seed directory {shared} holds files that are not prngd's (unrelated); " \
        in d.lines[0], d.log()
    # The advice is what to do with this directory, and another -s only as an example elsewhere.
    assert f"move them out, make {shared} nobody's (chown nobody: {shared}), or give -s a file in a directory " \
        "of its own (such as /var/lib/prngd/seed)" in d.lines[0]
    assert os.stat(shared).st_uid == 0
    assert not os.path.lexists(open_dir / "egd.sock"), "the failed start left its socket"


@needs_root
def test_another_users_seed_file_is_not_made_nobodys(tmp_path):
    directory = tmp_path / "seeds"
    directory.mkdir(mode=0o700)
    seed = directory / "seed"
    seed.write_bytes(b"x")
    os.chown(seed, 1234, 1234)  # someone else's: giving it to nobody would make it look like ours
    privileges.give_seed_directory(str(seed), privileges.lookup("nobody"))
    assert os.stat(directory).st_uid == NOBODY.pw_uid
    assert os.stat(seed).st_uid == 1234


def run_prngd(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "prngd", "-f", "-n", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/")


@pytest.mark.parametrize("user,message", [
    ("no-such-user-prngd", "prngd: -u: no user 'no-such-user-prngd' in the password database"),
    ("4000000000", "prngd: -u: no uid 4000000000 in the password database"),
    ("root", "prngd: -u root: that is root, nothing would be dropped"),
])
def test_an_unusable_user_is_one_line_and_exit_2(tmp_path, user, message):
    done = run_prngd("-u", user, str(tmp_path / "egd.sock"))
    assert done.returncode == 2
    assert done.stderr.strip() == message
    assert not os.path.lexists(tmp_path / "egd.sock")


def test_the_user_key_is_read_from_the_configuration(tmp_path):
    cfg = tmp_path / "prngd.conf"
    cfg.write_text("[prngd]\nuser = no-such-user-prngd\n")
    done = run_prngd("-c", str(cfg), str(tmp_path / "egd.sock"))
    assert (done.returncode, done.stderr.strip()) == (2, "prngd: -u: no user 'no-such-user-prngd' in the "
                                                         "password database")


def test_user_without_root_is_refused(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(privileges.PrivilegeError) as e:
        privileges.check_can_drop(privileges.lookup("nobody"))
    assert str(e.value) == "-u nobody needs root to switch users; running as uid 1000"


def test_commands_run_as_nobody_only_while_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert privileges.command_user() == privileges.User("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    monkeypatch.setattr(privileges, "NOBODY", "no-such-user-prngd")
    assert privileges.command_user() is False
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert privileges.command_user() is None


def test_without_nobody_a_root_daemon_skips_its_commands_with_one_warning(monkeypatch, caplog):
    from prngd import config, sources

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges, "NOBODY", "no-such-user-prngd")
    settings = config.Settings(commands=[config.Command(("/bin/true",), 0.1, "true")] * 2)
    built = sources.build_sources(settings)
    assert not [s for s in built if s.kind == "command"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["not running the 2 entropy commands: prngd runs as root and there is no user "
                        "'no-such-user-prngd' to run them as (use -u USER)"]


def test_defaults_are_resolved_as_root_and_kept_after_the_drop(monkeypatch):
    """Default paths depend on the euid: resolved once as root, they must not move to nobody's after the drop."""
    from prngd import config

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    pinned = config.pin_defaults(config.Settings(user="nobody"))
    assert (pinned.sockets, pinned.seedfile, pinned.admin_socket) == (
        ["/var/run/egd-pool"], "/var/lib/prngd/seed", "/var/run/egd-pool.admin")
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)  # after the drop, at SIGHUP
    reloaded = config.pin_defaults(config.Settings(user="nobody"), pinned)
    assert (reloaded.resolved_sockets(), reloaded.resolved_seedfile(), reloaded.resolved_admin_socket()) == (
        ["/var/run/egd-pool"], "/var/lib/prngd/seed", "/var/run/egd-pool.admin")
    # What the file names still wins, and -n (no seed file) stays off.
    changed = config.pin_defaults(config.Settings(seedfile="/srv/seed", admin_socket=""), pinned)
    assert (changed.resolved_seedfile(), changed.resolved_admin_socket()) == ("/srv/seed", None)
    assert config.pin_defaults(config.Settings(seedfile=""), pinned).resolved_seedfile() is None


def test_a_drop_that_leaves_root_regainable_is_refused(monkeypatch):
    # The switch calls do nothing here (this test process stays root), as in a
    # sandbox that fakes them: setuid(0) then succeeds, and the drop must refuse.
    for name in ("initgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda *args: None)
    # This test process must keep its bounding set: the daemons later tests start need it.
    monkeypatch.setattr(privileges, "_drop_bounding_set", lambda: None)
    with pytest.raises(privileges.PrivilegeError) as e:
        privileges.drop(privileges.lookup("nobody"))
    assert str(e.value) == "after switching to nobody the process could become root again; refusing to run"


# ---------------------------------------------------------------- no privilege left to regain

def caps_of(pid: int) -> dict[str, str]:
    return {k: v[0] for k, v in status_fields(f"/proc/{pid}/status").items()
            if k in privileges.LOCKED}


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv(1) to start with an inheritable capability")
def test_after_the_drop_no_capability_set_holds_anything_and_no_new_privs_is_set(start_daemon, open_dir,
                                                                                 tmp_path, monkeypatch):
    """Started, as a service manager may, with a capability in its inheritable and ambient sets."""
    wrapper = tmp_path / "python-with-inheritable-caps"
    wrapper.write_text("#!/bin/sh\nexec setpriv --inh-caps=+net_bind_service --ambient-caps=+net_bind_service "
                       f"{sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))  # what conftest's Daemon runs
    d = start_daemon("-u", "nobody", socket=str(open_dir / "egd.sock"))
    assert caps_of(d.pid) == {"NoNewPrivs": "1", "CapInh": "0000000000000000", "CapPrm": "0000000000000000",
                              "CapEff": "0000000000000000", "CapBnd": "0000000000000000",
                              "CapAmb": "0000000000000000"}
    assert len(egd_read(d.socket, 16)) == 16
    assert d.stop() == 0


@needs_root
def test_a_drop_that_cannot_set_no_new_privs_is_refused_with_one_line(monkeypatch):
    """The check reads /proc/self/status, not what the calls returned: a prctl that silently does nothing
    (a seccomp filter answering 0) is caught.  Run in a child, which really switches to nobody."""
    real_prctl = privileges._prctl
    monkeypatch.setattr(privileges, "_prctl", lambda option, *args: 0 if option == privileges.PR_SET_NO_NEW_PRIVS
                        else real_prctl(option, *args))
    def drop() -> str:
        try:
            privileges.drop(privileges.lookup("nobody"))
            return "dropped"
        except privileges.PrivilegeError as e:
            return str(e)

    assert in_child(drop) == "after switching to nobody the process keeps privileges (NoNewPrivs 0); refusing to run"


@pytest.mark.parametrize("fields,wrong", [
    ({"NoNewPrivs": "1", "CapInh": "0", "CapPrm": "0", "CapEff": "0", "CapBnd": "0", "CapAmb": "0"}, {}),
    ({"NoNewPrivs": "0", "CapInh": "0", "CapPrm": "0", "CapEff": "0", "CapBnd": "0", "CapAmb": "0"},
     {"NoNewPrivs": "0"}),
    ({"NoNewPrivs": "1", "CapInh": "0000000000000400", "CapPrm": "0", "CapEff": "0", "CapBnd": "000001ffffffffff",
      "CapAmb": "0"}, {"CapInh": "0000000000000400", "CapBnd": "000001ffffffffff"}),
    ({"NoNewPrivs": "1", "CapInh": "0", "CapPrm": "0", "CapEff": "0", "CapBnd": "0"}, {"CapAmb": "missing"}),
    ({"NoNewPrivs": "1", "CapInh": "0", "CapPrm": "0", "CapEff": "junk", "CapBnd": "0", "CapAmb": "0"},
     {"CapEff": "junk"}),
])
def test_what_the_drop_requires_of_proc_self_status(fields, wrong):
    assert privileges.unlocked(fields) == wrong


@needs_root
def test_the_seed_directory_may_hold_prngds_own_log_and_pidfile(start_daemon, open_dir):
    """Issue 19: `-u nobody --log-file DIR/prngd.log -s DIR/seed` was refused for holding prngd.log."""
    state = open_dir / "state"
    state.mkdir(mode=0o755)
    log_file = state / "prngd.log"
    # The log goes to the file, not to stderr: the readiness notification says when it serves.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(open_dir / "notify"))
    os.chmod(open_dir / "notify", 0o666)  # sent after the drop, as nobody
    notify.settimeout(30)
    with notify:
        d = start_daemon("-u", "nobody", "--log-file", str(log_file), "-p", str(state / "prngd.pid"),
                         seed=state / "seed", socket=str(open_dir / "egd.sock"), ready=False,
                         env={"NOTIFY_SOCKET": str(open_dir / "notify")})
        try:
            assert notify.recv(4096).startswith(b"READY=1"), d.log()
        except socket.timeout:
            raise AssertionError(f"no READY=1 (exit {d.proc.poll()}): {d.log()}") from None
    assert os.stat(state).st_uid == NOBODY.pw_uid
    assert len(egd_read(d.socket, 8)) == 8
    assert d.stop() == 0
    assert (state / "seed").stat().st_uid == NOBODY.pw_uid
    assert "holds files" not in log_file.read_text()


@needs_root
def test_the_admin_socket_belongs_to_the_daemons_user(start_daemon, open_dir):
    """Issue 19: after -u the admin socket was root's, 0600: the daemon's own user got Permission denied."""
    d = start_daemon("-u", "nobody", socket=str(open_dir / "egd.sock"))
    admin_path = open_dir / "egd.sock.admin"
    st = os.stat(admin_path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o600)
    # Asked as nobody: a forked child that becomes nobody (nobody cannot run root's python).
    from prngd import admin

    def ask() -> str:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)
        return json.dumps(admin.get_status(str(admin_path), 10))

    answer = in_child(ask)
    assert json.loads(answer)["pid"] == d.pid, answer
    assert d.stop() == 0


@needs_root
def test_a_configuration_the_user_cannot_read_is_refused_at_start(open_dir):
    """Issue 19: it started without a word and the first SIGHUP failed; now one line, exit 2, nothing bound."""
    cfg = open_dir / "prngd.conf"
    cfg.write_text("[sources]\nsystem = no\n")
    os.chmod(cfg, 0o600)  # root's: nobody cannot read it
    done = run_prngd("-u", "nobody", "-c", str(cfg), str(open_dir / "egd.sock"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"prngd: configuration {cfg} is not readable by nobody (Permission denied), who re-reads it at SIGHUP: "
        f"give nobody read access (e.g. chgrp {grp.getgrgid(NOBODY.pw_gid).gr_name} {cfg} && chmod g+r {cfg}, "
        "and the directories on the way)")
    assert not os.path.lexists(open_dir / "egd.sock")
    # Readable by the group nobody is in: accepted (the check asks the kernel as nobody, groups included).
    os.chown(cfg, 0, NOBODY.pw_gid)
    os.chmod(cfg, 0o640)
    assert privileges.unreadable_as(privileges.lookup("nobody"), str(cfg)) is None
    assert privileges.unreadable_as(privileges.lookup("nobody"), str(open_dir / "missing")) == \
        "No such file or directory"


def test_a_user_is_a_value():
    """Equal and hashed by name, uid and gid; immutable (what a frozen dataclass gave)."""
    user = privileges.User("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    assert user == privileges.User(name="nobody", uid=NOBODY.pw_uid, gid=NOBODY.pw_gid)
    assert hash(user) == hash(privileges.User("nobody", NOBODY.pw_uid, NOBODY.pw_gid))
    assert user != privileges.User("nobody", NOBODY.pw_uid, 0) and user != ("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(AttributeError):
        user.uid = 0
    with pytest.raises(AttributeError):
        del user.gid
    assert user.uid == NOBODY.pw_uid and repr(user).startswith("User(name='nobody', uid=")
