"""The sandbox's launcher: a small program run as ``python -I -S -X utf8 -c ... CONFIG``.

It is never imported by chatlane; it runs in a process of its own, started by `Sandbox.run`,
and builds the sandbox around the code before handing over to the runner (``_runner.py``).
It uses only the standard library and ctypes, and imports little, since every run pays its
start-up.

Mode "namespaces" (see docs/sandbox.md for why it is built by hand rather than with bwrap)::

    launcher L (caller's user)      unshare user+mount+pid+net+ipc+uts; a forked helper in
                                    the caller's namespace writes the id maps (nobody inside)
      builds the new root           tmpfs root, read-only binds, tmpfs /work, /dev nodes
      copies inputs in, outputs out after the run; enforces the time limit
      └── init G (pid 1)            mounts /proc, its own mount namespace, pivot_root, waits;
          │                         when it exits the kernel kills every process left
          └── runner R              no capabilities, NO_NEW_PRIVS, hard limits, execs python

Mode "limits-only": the launcher is a child subreaper; the runner gets a new session, hard
limits and no capabilities (and, when the launcher is root, the ids of nobody, keeping only
CAP_DAC_READ_SEARCH when nobody could not otherwise read the interpreter); at the end every process that is
still a descendant is killed, including those in new sessions (they are reparented to the
launcher, not to init).

The launcher reports on fd 4 (one marshalled dict); the runner reports on fd 3.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import marshal
import os
import resource
import signal
import stat
import sys

# The launcher imports only what it needs: not typing, contextlib or json (with re), which
# would add milliseconds to every run. (MYPY is always true for mypy, false when running.)
MYPY = False
if MYPY:
    from typing import Any

NOBODY = 65534

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_KEEPCAPS = 8
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
CAP_DAC_READ_SEARCH = 2

# statvfs f_flag bits (ST_*) that a bind remount inside a user namespace must keep: the
# kernel locks them on mounts that came from the parent namespace (mount_namespaces(7)).
_LOCKED_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)
HERE = os.path.dirname(os.path.abspath(__file__))
_runner: Any = None  # the module _runner.py, imported by main


class suppress:  # contextlib.suppress, without importing contextlib
    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)


class Failure(Exception):
    """A step of building the sandbox failed; the message names the step."""


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise Failure(
            f"{what} failed: {errno.errorcode.get(number, number)} ({os.strerror(number)})"
        )


def unshare(flags: int, what: str) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), what)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype or ''} on {target}",
    )


def prctl(option: int, value: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), what)


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def set_limits(config: dict[str, Any], processes: int) -> None:
    """Hard limits, so the code cannot raise them again (it has no CAP_SYS_RESOURCE)."""
    for kind, value in (
        (resource.RLIMIT_AS, config["memory"]),
        (resource.RLIMIT_FSIZE, config["file_size"]),
        (resource.RLIMIT_CPU, config["cpu"]),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_CORE, 0),
    ):
        _, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))


def drop_bounding(keep: int = 0) -> None:
    """Drop every capability but those in ``keep`` from the bounding set (for good)."""
    for cap in range(64):
        if keep & (1 << cap):
            continue
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # past the last capability the kernel knows


def set_capabilities(keep: int) -> None:
    """Effective, permitted and inheritable sets: exactly ``keep`` (capset, version 3)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    low, high = keep & 0xFFFFFFFF, keep >> 32
    data = (ctypes.c_uint32 * 6)(low, low, low, high, high, high)
    _check(_libc.capset(header, data), "capset")


def drop_capabilities() -> None:
    """No capability at all, now or after an exec."""
    drop_bounding()
    set_capabilities(0)


def become_runner(config: dict[str, Any], workdir: str) -> None:
    """In the forked runner: no way back to privileges, then the code.

    The runner is this interpreter, forked, rather than a new one: that saves a second
    interpreter start-up per run (the launcher already paid for it, with ``-I -S``).
    """
    os.chdir(workdir)
    prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "prctl(PR_SET_PDEATHSIG)")
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Only the code, stdout, stderr and the runner's report stay open.
    os.closerange(4, 1 << 16)
    os.environ.clear()
    os.environ.update(config["env"])
    sys.argv = [""]
    import site

    if config["own_site"]:
        site.main()  # the interpreter's own site-packages, as -I without -S would add them
    for directory in config["site_dirs"]:
        site.addsitedir(directory)
    del config
    sys.path[:] = [p for p in sys.path if p != HERE]  # not there inside, and not the code's
    _runner.main()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(BaseException):
            stream.flush()
    os._exit(0)


def report(status: dict[str, Any]) -> None:
    with os.fdopen(4, "wb") as f:
        f.write(marshal.dumps(status))


class Clock:
    """The run's time limit: at it, ``kill`` runs once (from a SIGALRM handler)."""

    def __init__(self, seconds: float, kill: Any) -> None:
        self.fired = False
        self._kill = kill
        signal.signal(signal.SIGALRM, self._on_alarm)
        # The caller's way to stop a run early (a cancelled task): the same clean stop.
        signal.signal(signal.SIGTERM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def _on_alarm(self, signum: int, frame: object) -> None:
        self.fired = True
        self._kill()

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def exit_status(status: int) -> int:
    """A wait status as a shell would: the exit code, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# Mode "limits-only".


def children() -> list[int]:
    """This process's children (``/proc/<pid>/task/<tid>/children``, else a scan of /proc)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def kill_descendants(group: int) -> None:
    """Kill and reap every descendant: as a subreaper, orphans (new sessions too) come to us."""
    with suppress(OSError):
        os.killpg(group, signal.SIGKILL)
    while True:
        for pid in children():
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def user_tasks(uid: int) -> int:
    """How many tasks (threads) the user has now: RLIMIT_NPROC counts them all."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def limits_only(config: dict[str, Any]) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, "prctl(PR_SET_CHILD_SUBREAPER)")
    root = os.geteuid() == 0
    # Root is exempt from RLIMIT_NPROC and may raise its own hard limits: as root, the code
    # runs as nobody. When nobody cannot read the interpreter (one under /root), it keeps one
    # capability, CAP_DAC_READ_SEARCH (reading and searching any file), so it can import.
    nobody = root and config["nobody"]
    read_all = nobody and config["read_all"]
    uid = NOBODY if nobody else os.getuid()
    processes = config["processes"] + (0 if nobody else user_tasks(uid))
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if nobody:
                keep = (1 << CAP_DAC_READ_SEARCH) if read_all else 0
                drop_bounding(keep)
                if read_all:
                    prctl(PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)  # root -> not: the capabilities go
                set_capabilities(keep)
                if read_all:
                    # Ambient, so the interpreters the code starts can import too.
                    _check(
                        _libc.prctl(
                            PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0
                        ),
                        "prctl(PR_CAP_AMBIENT_RAISE)",
                    )
            else:
                if root:
                    # Root where nobody is no id: keep no capability, now or across an exec
                    # (securebits NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, all locked).
                    prctl(PR_SET_SECUREBITS, 0x2F, "prctl(PR_SET_SECUREBITS)")
                drop_capabilities()
            set_limits(config, processes)
            become_runner(config, config["workdir"])
        except BaseException as e:
            os.write(2, f"sandbox: {e}\n".encode())
        os._exit(125)

    def kill() -> None:
        # The runner leads its own session, which it cannot leave: its group always holds it.
        with suppress(OSError):
            os.killpg(pid, signal.SIGKILL)

    clock = Clock(config["timeout"], kill)
    _, status = os.waitpid(pid, 0)
    clock.stop()
    kill_descendants(pid)
    report({"status": exit_status(status), "timed_out": clock.fired})


# Mode "namespaces".


def open_path(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def map_ids(target: int, root: bool, ready: int, done: int) -> None:
    """In a forked helper left in the caller's namespace: write the launcher's id maps.

    Inside, the only id is nobody (65534). It stands for nobody outside when the caller is
    root (a privileged writer may map any id), else for the caller's own id (the one mapping
    an unprivileged user may write, user_namespaces(7)). Root is never mapped.
    """
    status = 1
    try:
        os.read(ready, 1)
        uid, gid = (NOBODY, NOBODY) if root else (os.geteuid(), os.getegid())
        if not root:
            write_file(f"/proc/{target}/setgroups", "deny")
        write_file(f"/proc/{target}/uid_map", f"{NOBODY} {uid} 1\n")
        write_file(f"/proc/{target}/gid_map", f"{NOBODY} {gid} 1\n")
        status = 0
    except BaseException as e:
        os.write(2, f"sandbox: writing the id maps failed: {e}\n".encode())
    os.write(done, bytes([status]))
    os._exit(status)


def flags_of(path: str) -> int:
    """The locked mount flags of the mount that holds ``path``."""
    flags = 0
    current = os.statvfs(path).f_flag
    for st, ms in _LOCKED_FLAGS:
        if current & st:
            flags |= ms
    return flags


def mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def build_root(config: dict[str, Any], new: str, sources: dict[str, tuple[int, int]]) -> None:
    """Fill the tmpfs at ``new``: read-only binds, /work, /tmp, /dev, /etc, symlinks."""
    for link, target in config["symlinks"]:
        os.symlink(target, new + link)
    mkdirs(new + "/etc")
    for path in config["binds"]:
        fd, flags = sources[path]
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            mkdirs(new + path)
        else:
            mkdirs(os.path.dirname(new + path))
            os.close(os.open(new + path, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(f"/proc/self/fd/{fd}", new + path, None, MS_BIND)
        remount = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | flags
        mount(None, new + path, None, remount)
    mkdirs(new + "/dev")
    for name in DEVICES:
        fd, _ = sources["/dev/" + name]
        node = new + "/dev/" + name
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        mount(f"/proc/self/fd/{fd}", node, None, MS_BIND)
    os.symlink("/proc/self/fd", new + "/dev/fd")
    for name, text in config["etc"].items():
        with open(f"{new}/etc/{name}", "w", encoding="utf-8") as f:
            f.write(text)
    for name, target in config["etc_links"].items():
        os.symlink(target, f"{new}/etc/{name}")
    work = new + config["workdir"]
    for directory in (work, new + "/tmp", new + "/proc"):
        mkdirs(directory)
    # /tmp is the working directory too, unless something allowed lives under the host's /tmp
    # (it is bound there already, and a mount on /tmp would hide it).
    options = (
        f"size={config['disk']},nr_inodes={config['inodes']},mode=0700,uid={NOBODY},gid={NOBODY}"
    )
    mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, options)
    if not any(path == "/tmp" or path.startswith("/tmp/") for path in config["binds"]):
        mount(work, new + "/tmp", None, MS_BIND)


def copy_file(source: int, target: int, limit: int) -> int:
    copied = 0
    while copied <= limit:
        chunk = os.read(source, 1 << 20)
        if not chunk:
            return copied
        os.write(target, chunk)
        copied += len(chunk)
    return copied


def copy_in(staging: str, work: str) -> None:
    inbox = os.path.join(staging, "in")
    for name in os.listdir(inbox):
        source = os.open(os.path.join(inbox, name), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            target = os.open(os.path.join(work, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                copy_file(source, target, 1 << 62)
            finally:
                os.close(target)
        finally:
            os.close(source)


def copy_out(work: str, staging: str, names: list[str], limit: int) -> dict[str, str]:
    """Copy the named outputs back; only regular files (never a link the code planted)."""
    problems: dict[str, str] = {}
    for name in names:
        try:
            source = os.open(os.path.join(work, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            problems[name] = "missing" if e.errno == errno.ENOENT else "not a regular file"
            continue
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):
                problems[name] = "not a regular file"
                continue
            target = os.open(
                os.path.join(staging, "out", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            try:
                if copy_file(source, target, limit) > limit:
                    problems[name] = "too large"
            finally:
                os.close(target)
        finally:
            os.close(source)
    return problems


def init(config: dict[str, Any], new: str) -> None:
    """Pid 1 of the new pid namespace: finish the root, start the runner, wait for it."""
    with suppress(Failure):
        # A host that hides parts of its /proc forbids a new one: then the code goes without.
        mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS) for the root")
    os.chdir(new)
    pivot = _PIVOT_ROOT.get(os.uname().machine)
    if pivot is not None:
        _check(_libc.syscall(pivot, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount of the old root")
    else:
        os.chroot(".")
    os.chdir("/")
    runner = os.fork()
    if runner == 0:
        try:
            drop_capabilities()
            set_limits(config, config["processes"] + 2)  # + the launcher and this init
            become_runner(config, config["workdir"])
        except BaseException as e:
            os.write(2, f"sandbox: {e}\n".encode())
        os._exit(125)
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == runner:
            break
    os.write(config["status_fd"], str(exit_status(status)).encode())
    # Leaving kills every process still in the namespace (pid_namespaces(7)).
    os._exit(0)


def namespaces(config: dict[str, Any]) -> None:
    staging = config["staging"]
    new = os.path.join(staging, "root")
    root = os.geteuid() == 0
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:
        map_ids(me, root, ready_r, done_w)
    try:
        unshare(
            CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS,
            "unshare(user, mount, pid, net, ipc, uts namespaces)",
        )
    except Failure:
        os.write(ready_w, b"x")
        os.waitpid(helper, 0)
        raise
    os.write(ready_w, b"x")
    ok = os.read(done_r, 1)
    os.waitpid(helper, 0)
    if ok != b"\0":
        raise Failure("writing the user namespace's id maps failed")
    # Open every source while this process still has the caller's ids (so it can reach an
    # interpreter under /root), in the new mount namespace (binds must come from there).
    sources = {path: (open_path(path), flags_of(path)) for path in config["binds"]}
    for name in DEVICES:
        sources["/dev/" + name] = (open_path("/dev/" + name), 0)
    # Be nobody from here on; the capabilities in the new namespace stay until the runner
    # drops them.
    if root:
        os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    build_root(config, new, sources)
    for fd, _ in sources.values():
        os.close(fd)
    copy_in(staging, new + config["workdir"])
    mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    status_r, status_w = os.pipe()
    config["status_fd"] = status_w
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_r)
            init(config, new)
        except BaseException as e:
            os.write(status_w, f"!{e}".encode())  # a failure to set up, not the code's
        os._exit(125)

    def kill() -> None:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)

    os.close(status_w)
    clock = Clock(config["timeout"], kill)
    _, status = os.waitpid(pid, 0)
    clock.stop()
    code = os.read(status_r, 4096)
    if code.startswith(b"!"):
        raise Failure(code[1:].decode(errors="replace"))
    problems = copy_out(new + config["workdir"], staging, config["outputs"], config["disk"])
    report(
        {
            "status": int(code) if code else None,
            "init": exit_status(status),
            "timed_out": clock.fired,
            "outputs": problems,
        }
    )


def place_reports(fds: list[int]) -> None:
    """Move the two report files the caller passed to fds 3 (the runner's) and 4 (ours)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
    for fd in fds:
        os.close(fd)
    for number, fd in zip((3, 4), high, strict=True):
        os.dup2(fd, number)
        os.close(fd)


def main() -> None:
    """Run as ``python -I -S -X utf8 -c '...import _launcher; _launcher.main()' CONFIG``."""
    global _runner
    _runner = __import__("_runner")  # now, while this directory can be read: inside it is not

    config = marshal.loads(bytes.fromhex(sys.argv[1]))
    place_reports(config["fds"])
    try:
        if config["mode"] == "namespaces":
            namespaces(config)
        else:
            limits_only(config)
    except Failure as e:
        report({"failure": str(e)})
        sys.exit(125)
    except OSError as e:
        report({"failure": f"{e}"})
        sys.exit(125)


if __name__ == "__main__":
    main()
