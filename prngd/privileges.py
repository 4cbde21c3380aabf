"""Who the daemon runs as: the drop to -u USER, the user commands run as, the private runtime directory.

The drop (`-u USER`, the `user` key) happens once every socket, the admin
socket and the pidfile are in place, and before the seed file is read:

1. the seed file's directory (created if missing) and an existing seed file
   are given to USER, so periodic and final saves work after the drop; only a
   directory that holds nothing but the seed is given away, and only what root
   owns (a seed file someone else owns stays theirs, and stays uncredited);
2. supplementary groups become USER's own (initgroups), then the gid, then the
   uid: setgid before setuid, since after setuid we may no longer change gid;
3. regaining root must fail (setuid(0) raises) and no capability may be left,
   or the daemon refuses to go on.

USER's groups rather than none: access to a hardware RNG (/dev/hwrng) or to
Postfix's exchange file is then granted the usual way, by adding USER to a
group; an account made for prngd (or nobody) has no other group.

Standard library only; imports nothing of prngd.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import re
import stat
from dataclasses import dataclass

log = logging.getLogger("prngd")

NOBODY = "nobody"


class PrivilegeError(Exception):
    """The drop cannot be done safely; the message says why, in one line."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


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

def _capabilities() -> dict[str, int]:
    caps = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("CapPrm:", "CapEff:", "CapAmb:")):
                    key, value = line.split(":", 1)
                    caps[key] = int(value.strip(), 16)
    except OSError:
        pass
    return caps


def drop(user: User) -> None:
    """Become USER for good (groups, gid, uid), and prove that root cannot be regained."""
    try:
        os.initgroups(user.name, user.gid)
        os.setgid(user.gid)
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
    left = {k: v for k, v in _capabilities().items() if v}
    if left:
        raise PrivilegeError(f"after switching to {user.name} capabilities remain ({left}); refusing to run")
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
