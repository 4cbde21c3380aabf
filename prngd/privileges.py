"""Who the daemon runs as: the drop to -u USER, the user commands run as, the private runtime directory.

The drop (`-u USER`, the `user` key) happens once every socket, the admin
socket and the pidfile are in place, and before the seed file is read:

1. the seed file's directory (created if missing) and an existing seed file
   are given to USER, so periodic and final saves work after the drop; only a
   directory that holds nothing but the seed is given away, and only what root
   owns (a seed file someone else owns stays theirs, and stays uncredited);
2. supplementary groups become USER's own (initgroups), then the gid, then the
   uid: setgid before setuid, since after setuid we may no longer change gid;
3. while still root the capability bounding set is emptied (PR_CAPBSET_DROP);
   after the switch the inheritable and ambient sets are cleared and
   no_new_privs is set: nothing executed later (a setuid program, a file
   with capabilities) can gain a privilege;
4. regaining root must fail (setuid(0) raises), and /proc/self/status must
   show no_new_privs and every capability set empty, or the daemon refuses
   to go on.

USER's groups rather than none: access to a hardware RNG (/dev/hwrng) or to
Postfix's exchange file is then granted the usual way, by adding USER to a
group; an account made for prngd (or nobody) has no other group.

Standard library only (prctl and capset through ctypes); imports nothing of prngd.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import pwd
import re
import stat

from prngd.value import Value

log = logging.getLogger("prngd")

NOBODY = "nobody"


class PrivilegeError(Exception):
    """The drop cannot be done safely; the message says why, in one line."""


class User(Value):
    """A user from the password database; immutable and equal by value (prngd.value)."""

    __slots__ = ("name", "uid", "gid")

    def __init__(self, name: str, uid: int, gid: int) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "uid", uid)
        object.__setattr__(self, "gid", gid)


def lookup(spec: str) -> User:
    """The user named `spec` (a name or a numeric uid) in the password database."""
    spec = str(spec).strip()
    try:
        pw = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, OverflowError, ValueError):
        what = f"uid {spec}" if spec.isdigit() else f"user {spec!r}"
        raise PrivilegeError(f"-u: no {what} in the password database") from None
    if pw.pw_uid == 0:
        raise PrivilegeError(f"-u {spec}: that is root, nothing would be dropped")
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid)


def check_can_drop(user: User) -> None:
    euid = os.geteuid()
    if euid != 0:
        raise PrivilegeError(f"-u {user.name} needs root to switch users; running as uid {euid}")


# ---------------------------------------------------------------- the seed directory

def _is_own_temp(name: str, base: str) -> bool:
    # seedfile.write_atomic's temporaries: .BASE.PID.HEX.tmp
    return re.fullmatch(rf"\.{re.escape(base)}\.\d+\.[0-9a-f]+\.tmp", name) is not None


def give_seed_directory(path: str, user: User, own_files=()) -> None:
    """Make the seed file's directory (and an existing seed file that root owns) USER's.

    `own_files` are the paths of prngd's other files (its log file, the
    exchange file, the pidfile): the directory may hold them too.
    """
    path = os.path.abspath(path)
    directory, base = os.path.split(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        log.info("created seed directory %s (mode 0700)", directory)
    ours = {os.path.basename(p) for p in own_files if p and os.path.isabs(p) and os.path.dirname(p) == directory}
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid == 0 and (st.st_uid, st.st_gid) != (user.uid, user.gid):
            # Giving away a shared directory (/var/lib, /tmp) would hand USER
            # every file in it: only one holding nothing but prngd's own files is given.
            others = sorted(n for n in os.listdir(fd) if n != base and n not in ours and not _is_own_temp(n, base))
            if others:
                more = f" and {len(others) - 1} more" if len(others) > 1 else ""
                raise PrivilegeError(
                    f"seed directory {directory} holds files that are not prngd's ({others[0]}{more}); -u gives "
                    f"only a directory of prngd's own to {user.name}: move them out, make {directory} "
                    f"{user.name}'s (chown {user.name}: {directory}), or give -s a file in a directory of its own"
                    + (" (such as /var/lib/prngd/seed)" if directory != "/var/lib/prngd" else ""))
            os.fchown(fd, user.uid, user.gid)
        elif st.st_uid not in (0, user.uid):
            raise PrivilegeError(f"seed directory {directory} belongs to uid {st.st_uid}, "
                                 f"neither root nor {user.name}; saves would fail")
    finally:
        os.close(fd)
    try:
        sfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP):
            return  # no seed yet; a symbolic link is refused by the seed file's own rules
        raise PrivilegeError(f"seed file {path}: {e.strerror}") from None
    try:
        st = os.fstat(sfd)
        # Only root's: chowning another user's file to USER would make it look like our own.
        if stat.S_ISREG(st.st_mode) and st.st_uid == 0:
            os.fchown(sfd, user.uid, user.gid)
    finally:
        os.close(sfd)


def give_socket(path: str, user: User) -> None:
    """A socket just bound as root becomes USER's, so the daemon's own user may use it (the admin socket)."""
    os.chown(path, user.uid, user.gid, follow_symlinks=False)


def unreadable_as(user: User, path: str) -> str | None:
    """Why USER cannot read `path` (an OS message), or None if it can.

    Asked of the kernel as USER (a child that takes USER's groups, gid and
    uid, as `drop` does, then opens the file): mode bits, ACLs, groups and
    every directory on the way count, as they will when the daemon re-reads
    its configuration at SIGHUP.  os.access cannot ask for another user.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 255
        try:
            os.initgroups(user.name, user.gid)
            os.setgid(user.gid)
            os.setuid(user.uid)
            with open(path, "rb"):
                code = 0
        except OSError as e:
            code = e.errno if e.errno and 0 < e.errno < 255 else 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return os.strerror(code) if 0 < code < 255 else "cannot tell why"


# ---------------------------------------------------------------- the drop

# prctl(2) and capset(2) options (linux/prctl.h, linux/capability.h)
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
# What /proc/self/status must say once the drop is done: no capability in any set, no way to gain one.
LOCKED = {"NoNewPrivs": 1, "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
    """prctl(2); OSError on failure."""
    result = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                         ctypes.c_ulong(0))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _clear_capability_sets() -> None:
    """capset(2) with every set empty: what setuid leaves in the inheritable set goes too."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _last_cap() -> int:
    try:
        with open(CAP_LAST_CAP) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # the most a 64-bit set holds; PR_CAPBSET_DROP's EINVAL ends the loop earlier


def _drop_bounding_set() -> None:
    """Drop every capability from the bounding set (needs CAP_SETPCAP: done while still root),
    so nothing this process or its children execute can gain one back."""
    for cap in range(_last_cap() + 1):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno == errno.EINVAL:  # beyond what this kernel knows
                break
            if _prctl(PR_CAPBSET_READ, cap) != 0:  # EPERM without CAP_SETPCAP, unless already dropped
                raise


def status_fields(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status as a dict (values stripped); OSError if it cannot be read."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def unlocked(fields: dict[str, str]) -> dict[str, str]:
    """Of /proc/self/status's fields, those not as LOCKED requires (a missing one counts)."""
    wrong = {}
    for key, wanted in LOCKED.items():
        value = fields.get(key)
        try:
            ok = value is not None and int(value, 16 if key.startswith("Cap") else 10) == wanted
        except ValueError:
            ok = False
        if not ok:
            wrong[key] = value if value is not None else "missing"
    return wrong


def drop(user: User) -> None:
    """Become USER for good (groups, gid, uid), and prove that root cannot be regained.

    While still root the capability bounding set is emptied; after the switch
    the inheritable and ambient sets are cleared and no_new_privs set, so no
    setuid program or file capability can give a privilege back.  Then
    /proc/self/status must show all of that, or the daemon refuses to go on.
    """
    try:
        os.initgroups(user.name, user.gid)
        os.setgid(user.gid)
    except OSError as e:
        raise PrivilegeError(f"cannot switch to user {user.name}: {e.strerror}") from None
    try:
        _drop_bounding_set()
    except OSError as e:
        raise PrivilegeError(f"cannot empty the capability bounding set before switching to {user.name}: "
                             f"{e.strerror}; refusing to run") from None
    try:
        os.setuid(user.uid)
    except OSError as e:
        raise PrivilegeError(f"cannot switch to user {user.name}: {e.strerror}") from None
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(f"after switching to {user.name} the process could become root again; refusing to run")
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        raise PrivilegeError(f"after switching to {user.name} the ids are {os.getresuid()}/{os.getresgid()}; "
                             "refusing to run")
    try:
        _clear_capability_sets()
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        raise PrivilegeError(f"after switching to {user.name} cannot clear the capability sets or set "
                             f"no_new_privs: {e.strerror}; refusing to run") from None
    try:
        fields = status_fields()
    except OSError:
        fields = {}  # nothing shown is nothing proved: every field counts as wrong
    wrong = unlocked(fields)
    if wrong:
        shown = ", ".join(f"{k} {v}" for k, v in wrong.items())
        raise PrivilegeError(f"after switching to {user.name} the process keeps privileges ({shown}); "
                             "refusing to run")
    log.info("running as user %s (uid %d, gid %d)", user.name, user.uid, user.gid)


# ---------------------------------------------------------------- entropy commands

def command_user() -> User | None | bool:
    """Whom entropy commands run as: None for ourselves (we are not root), the
    `nobody` user when we are root, or False when root has no `nobody` to use."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(NOBODY)
    except KeyError:
        return False
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid)


# ---------------------------------------------------------------- the private runtime directory

def ensure_private_dir(path: str) -> None:
    """Create `path` (mode 0700) if missing, then accept it only if it is a real
    directory owned by our euid that neither group nor others may write (as
    ssh-agent and tmux check theirs).  Raises PrivilegeError naming the path and the problem."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise PrivilegeError(f"cannot create the runtime directory {path}: {e.strerror}") from None
    st = os.lstat(path)
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != euid:
        owner = _user_name(st.st_uid)
        problem = f"belongs to {owner}, not to uid {euid}"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    else:
        return
    raise PrivilegeError(f"runtime directory {path} {problem}: refusing to serve in it "
                         "(remove it, or set XDG_RUNTIME_DIR, or name a socket elsewhere)")


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
