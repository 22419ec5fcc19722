"""The operating system's walls around a process that may run code the user did not write.

Owns every wall copilot raises, in one place for the trainer, the sandbox child and
the trials: the allow-listed environment (`allowed_environment`), and, applied by the
walled process itself as its very first act (`apply_walls`):
- resource limits (file size, no core dumps);
- a network namespace of its own (`unshare(CLONE_NEWNET)` as root, with a user
  namespace otherwise), so 127.0.0.1 and abstract unix sockets are another machine's;
- no capabilities (bounding, ambient, effective, permitted, inheritable cleared) and
  no_new_privs, so root in CI is an ordinary user behind the walls;
- Landlock: writes only beneath `WallPlan.write_roots`, reads only beneath
  `read_roots`, no TCP bind or connect, no signals or abstract sockets out;
- seccomp: `socket()` refused for every family but netlink (Landlock has no rule for
  UDP or for unix sockets at a path) and no io_uring (whose requests seccomp cannot see).

On this kernel a Landlock or seccomp restriction binds the calling thread and its
future children only, so `apply_walls` refuses to run once a second thread exists:
call it before importing torch. It raises nothing else; what could not be raised is
in `WallsApplied.missing`, for the caller to say once.

It imports only the standard library (the sandbox child loads this file by path, with
nothing of copilot importable) and must never import torch or any part of copilot.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

# Variables a training process may need, by exact name or prefix; nothing else of the parent's is copied.
ALLOWED_VARIABLES = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH", "PYTHONHASHSEED", "LD_LIBRARY_PATH",
     "CUDA_HOME", "CUDA_PATH", "MALLOC_ARENA_MAX", "TORCH_HOME", "XDG_CACHE_HOME"}
)  # fmt: skip
ALLOWED_PREFIXES = ("CUDA_", "NCCL_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "HF_", "LC_", "TORCH_", "PYTORCH_")
# Never copied, even when an allowed prefix matches (HF_TOKEN) or the user passes the name by mistake.
SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "ACCESS_KEY", "CREDENTIAL", "AWS_")

DEFAULT_FILE_SIZE_LIMIT_BYTES = 8 * 1024**3  # a checkpoint of a large model still fits; a flood of output does not

# System call numbers (x86_64, aarch64) and constants from the kernel's uapi headers.
_ARCHES = {
    # machine: (AUDIT_ARCH, socket, io_uring_setup)
    "x86_64": (0xC000003E, 41, 425),
    "aarch64": (0xC00000B7, 198, 425),
}
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1_ALL = (1 << 13) - 1  # execute .. make_sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_NET_BIND_AND_CONNECT_TCP = 0b11  # ABI 4
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11  # ABI 6
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_AF_NETLINK = 16
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM = 1

# What torch and the C library read at run time, beyond the interpreter's own folders.
SYSTEM_READ_ROOTS = (
    "/usr", "/lib", "/lib64", "/opt/conda", "/sys/devices/system/cpu", "/sys/devices/system/node",
    "/sys/fs/cgroup", "/sys/bus/pci", "/sys/module/nvidia", "/proc/driver/nvidia", "/etc/ld.so.conf.d", "/etc/alternatives",
)  # fmt: skip
SYSTEM_READ_FILES = (
    "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/cap_last_cap",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
    "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random",
)  # fmt: skip
# Read and written: shared memory for queues and tensors, the GPU's device files.
SYSTEM_WRITE_ROOTS = ("/dev/shm",)
GPU_DEVICE_PREFIX = "nvidia"


@dataclass(frozen=True)
class WallPlan:
    """What a walled process may touch; built by whoever starts it, applied by the process itself."""

    write_roots: tuple[str, ...]  # folders or files: read, written, created beneath
    read_roots: tuple[str, ...] = ()  # folders or files: read (and executed) beneath
    close_network: bool = True
    file_size_limit_bytes: int = DEFAULT_FILE_SIZE_LIMIT_BYTES
    # /dev/shm (queues, shared tensors, DataLoader workers) and the GPU's device files.
    shared_memory_and_gpu: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WallPlan:
        fields = json.loads(text)
        return cls(**{**fields, "write_roots": tuple(fields["write_roots"]), "read_roots": tuple(fields["read_roots"])})


@dataclass
class WallsApplied:
    """Which walls stand, for the process's log and the tests; `missing` says what the kernel refused."""

    network_namespace: bool = False
    capabilities_dropped: bool = False
    landlock_abi: int = 0
    seccomp: bool = False
    missing: list[str] = field(default_factory=list)

    def describe(self) -> str:
        standing = [
            name
            for name, up in (
                ("own network namespace", self.network_namespace),
                ("no capabilities", self.capabilities_dropped),
                (f"Landlock ABI {self.landlock_abi}", self.landlock_abi > 0),
                ("seccomp socket filter", self.seccomp),
            )
            if up
        ]
        text = "walls: " + (", ".join(standing) or "none")
        return text + (f"; missing: {'; '.join(self.missing)}" if self.missing else "")


class WallsError(RuntimeError):
    """The walls cannot be applied as asked (a thread already runs); the process must not go on."""


_applied: WallsApplied | None = None


def current() -> WallsApplied | None:
    """The walls this process raised, None when it runs unwalled."""
    return _applied


# ---------------------------------------------------------------------- the environment


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def allowed_environment(
    source: Mapping[str, str], *, home: str | None, scratch: str, pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """A fresh environment from the allow-list plus the names in `pass_env`, with its own scratch space.

    `home` is the process's own home; None keeps the user's (a trainer running only the
    user's own code). A name in `pass_env` is copied even when it looks like a secret:
    the user named it (e.g. WANDB_API_KEY for their own logging).
    """
    environment = {
        name: value
        for name, value in source.items()
        if (name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)) and not is_secret_name(name)
    }
    environment.update({name: source[name] for name in pass_env if name in source})
    environment.setdefault("PATH", os.defpath)
    environment.setdefault("LANG", "C.UTF-8")
    environment["TMPDIR"] = scratch
    if home is not None:
        # A home of its own: nothing of the user's dotfiles (~/.aws, ~/.netrc) is found through it.
        environment.update({"HOME": home, "XDG_CACHE_HOME": os.path.join(home, ".cache")})
    elif "HOME" in source:
        environment["HOME"] = source["HOME"]
    return environment


def interpreter_read_roots() -> tuple[str, ...]:
    """The interpreter, its standard library, site-packages and every folder on sys.path."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    roots |= {entry for entry in sys.path if entry and os.path.isdir(entry)}
    return tuple(sorted(roots))


def visible_entries(folder: str) -> tuple[str, ...]:
    """The entries of `folder` without the hidden ones (`.git`, `.copilot`, dotfiles): a read grant for a project folder."""
    try:
        names = os.listdir(folder)
    except OSError:
        return ()
    return tuple(os.path.join(folder, name) for name in sorted(names) if not name.startswith("."))


# ---------------------------------------------------------------------- applying them


def apply_walls(plan: WallPlan) -> WallsApplied:
    """Raise every wall `plan` asks for around this process, for good; call it while single-threaded."""
    global _applied
    if _thread_count() > 1:
        raise WallsError("walls must be applied before any thread exists (Landlock binds the calling thread only)")
    applied = WallsApplied()
    resource.setrlimit(resource.RLIMIT_FSIZE, (plan.file_size_limit_bytes, plan.file_size_limit_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead of killing
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if plan.close_network:
        applied.network_namespace = _enter_network_namespace(libc)
        if not applied.network_namespace:
            applied.missing.append("no network namespace (unshare refused)")
    # The rules open their paths now, while this process may still read everything it was started with.
    abi = landlock_abi()
    ruleset = _landlock_ruleset(libc, abi, plan) if abi > 0 else -1
    applied.capabilities_dropped = _drop_capabilities(libc)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        applied.missing.append("no_new_privs refused")
    if ruleset >= 0:
        try:
            if libc.syscall(ctypes.c_long(_LANDLOCK_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_long(0)) == 0:
                applied.landlock_abi = abi
        finally:
            os.close(ruleset)
    if not applied.landlock_abi:
        applied.missing.append("no Landlock (the kernel lacks it): file reads and writes are not confined")
    if plan.close_network:
        applied.seccomp = _install_socket_filter(libc)
        if not applied.seccomp:
            applied.missing.append("no seccomp socket filter")
    _applied = applied
    return applied


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _enter_network_namespace(libc: ctypes.CDLL) -> bool:
    """An empty network namespace of this process's own: root may make one; others need a user namespace too."""
    if libc.unshare(_CLONE_NEWNET) == 0:
        return True
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return False
    # Map our own ids, so files keep their owner's name inside the new user namespace.
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"), ("/proc/self/gid_map", f"{gid} {gid} 1")):
        try:
            with open(path, "w", encoding="ascii") as file:
                file.write(text)
        except OSError:
            pass
    return True


def _drop_capabilities(libc: ctypes.CDLL) -> bool:
    """Clear the bounding and ambient sets, then effective, permitted and inheritable (capset)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as file:
            last_cap = int(file.read())
    except (OSError, ValueError):
        last_cap = 40
    for capability in range(last_cap + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # refused without CAP_SETPCAP: then nothing was held
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two {effective, permitted, inheritable} words, all zero
    return libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)) == 0


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none."""
    if platform.system() != "Linux" or platform.machine() not in _ARCHES:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        ctypes.c_long(_LANDLOCK_CREATE_RULESET), None, ctypes.c_long(0), ctypes.c_long(_LANDLOCK_CREATE_RULESET_VERSION)
    )
    return max(version, 0)


def _landlock_ruleset(libc: ctypes.CDLL, abi: int, plan: WallPlan) -> int:
    """A Landlock ruleset fd allowing what `plan` lists (and what torch needs), or -1."""
    handled_fs = _FS_ABI1_ALL | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    handled_fs |= _FS_IOCTL_DEV if abi >= 5 else 0
    file_rights = (_FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE) | (handled_fs & (_FS_TRUNCATE | _FS_IOCTL_DEV))

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    # TCP stays closed even where the network namespace could not be made.
    attr = RulesetAttr(
        handled_fs,
        _NET_BIND_AND_CONNECT_TCP if abi >= 4 and plan.close_network else 0,
        _SCOPE_ABSTRACT_UNIX_AND_SIGNAL if abi >= 6 else 0,
    )
    attr_size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct grew with the ABI
    ruleset = libc.syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_long(attr_size), ctypes.c_long(0))
    if ruleset < 0:
        return -1
    gpu_devices = tuple(os.path.join("/dev", name) for name in _listdir("/dev") if name.startswith(GPU_DEVICE_PREFIX))
    own_process = f"/proc/{os.getpid()}"  # /proc/self, but not the parent's environ beside it
    rules = [(path, _FS_READ) for path in (*interpreter_read_roots(), *SYSTEM_READ_ROOTS, *plan.read_roots, own_process)]
    rules += [(path, _FS_READ_FILE) for path in SYSTEM_READ_FILES]
    rules += [(path, handled_fs) for path in plan.write_roots]
    if plan.shared_memory_and_gpu:
        rules += [(path, handled_fs) for path in (*SYSTEM_WRITE_ROOTS, *gpu_devices)]
    for path, access in rules:
        try:
            path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a root this machine does not have
        try:
            rule = PathBeneathAttr(access if os.path.isdir(path) else access & file_rights, path_fd)
            libc.syscall(
                ctypes.c_long(_LANDLOCK_ADD_RULE), ctypes.c_long(ruleset), ctypes.c_long(_LANDLOCK_RULE_PATH_BENEATH),
                ctypes.byref(rule), ctypes.c_long(0),
            )  # fmt: skip
        finally:
            os.close(path_fd)
    return ruleset


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _install_socket_filter(libc: ctypes.CDLL) -> bool:
    """seccomp: `socket()` fails with EPERM for every family but netlink; io_uring_setup fails too.

    Sockets made before (the connection to the parent, socketpairs) keep working.
    """
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        return False
    audit_arch, socket_nr, io_uring_setup_nr = arch
    load, jump_equal, jump_set, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K
    deny = _SECCOMP_RET_ERRNO | _EPERM
    program = [
        (load, 0, 0, 4),  # seccomp_data.arch
        (jump_equal, 1, 0, audit_arch),
        (ret, 0, 0, deny),  # another ABI (32-bit calls on a 64-bit kernel): nothing is allowed through it
        (load, 0, 0, 0),  # seccomp_data.nr
        (jump_set, 0, 1, _X32_SYSCALL_BIT),
        (ret, 0, 0, deny),
        (jump_equal, 0, 1, io_uring_setup_nr),
        (ret, 0, 0, deny),
        (jump_equal, 0, 3, socket_nr),
        (load, 0, 0, 16),  # seccomp_data.args[0], low word: the address family
        (jump_equal, 1, 0, _AF_NETLINK),
        (ret, 0, 0, deny),
        (ret, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    filters = b"".join(struct.pack("HBBI", code, true_skip, false_skip, k) for code, true_skip, false_skip, k in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buffer))
    return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0) == 0
