"""The sandbox's template process: imports torch once, then forks one walled child per check.

A check in a fresh interpreter spends nearly all of its seconds importing torch. This
process is started once by `copilot.advisor.sandbox.template` as `python -I -B
template_process.py FD`: exec'd, not the standard library's forkserver, which would
inherit the app's whole environment (credentials included, readable in
`/proc/self/environ`). Its environment is the walls' allow-list and its home a
temporary folder of its own. It imports torch, `child.py` and the copilot files the
child loads by path, says it is ready, and then, for each `TemplateRequest` on its
control socket (FD), forks. The forked child starts a session of its own, takes the
check's report and stderr files as its stdout and stderr, closes every other descriptor
(the control socket among them), and runs `child.check`, whose first act is to raise the
walls: no line of the checked code runs before them.

Forking is safe only from a single-threaded process (another thread's locks would be
copied held, and Landlock must bind the whole child): with one intra-op thread torch's
import starts none, and the template refuses to fork once it counts a second, so its
client falls back to fresh interpreters. The template itself runs no checked code. It
keeps each child unreaped until the parent, which has killed the child's process group
by then, says to reap it (so that group cannot be another's), then reports what the
kernel measured of the child (wait4).

It imports only the standard library at module level (the parent imports it for the
messages); torch and the child's files are loaded in `main`, never the copilot package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import types
from dataclasses import asdict, dataclass
from typing import Literal, NoReturn, get_args

CHILD_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
CHILD_MODULE_NAME = "copilot_sandbox_child"
# One message is one packet (SOCK_SEQPACKET); requests and replies carry paths and numbers only.
MAX_MESSAGE_BYTES = 64 * 1024
RequestKind = Literal["fork", "reap"]
ReplyKind = Literal["ready", "started", "exited", "reaped", "refused"]


@dataclass(frozen=True)
class TemplateRequest:
    """Parent to template. "fork": check the job at `job_path` with stdout and stderr going to
    the two files the parent made. "reap": the child that last ended may be reaped now."""

    kind: RequestKind
    job_path: str = ""
    report_path: str = ""
    stderr_path: str = ""


@dataclass(frozen=True)
class TemplateReply:
    """Template to parent; `kind` says which fields carry something.

    "ready": imported, with `threads` threads of its own; "started": child `pid` forked;
    "exited": that child ended and is not reaped yet; "reaped": its `returncode` and what
    the kernel measured (`cpu_s`, `peak_mb`); "refused": `reason`, and no child exists.
    """

    kind: ReplyKind
    threads: int = 0
    pid: int = 0
    returncode: int = 0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    reason: str = ""


def encode(message: TemplateRequest | TemplateReply) -> bytes:
    return json.dumps(asdict(message)).encode()


def decode_reply(data: bytes) -> TemplateReply:
    """A reply from bytes; ValueError or TypeError for anything that is not one."""
    reply = TemplateReply(**_json_object(data))
    if reply.kind not in get_args(ReplyKind):
        raise ValueError(f"unknown reply {reply.kind!r}")
    return reply


def decode_request(data: bytes) -> TemplateRequest:
    request = TemplateRequest(**_json_object(data))
    if request.kind not in get_args(RequestKind):
        raise ValueError(f"unknown request {request.kind!r}")
    return request


def _json_object(data: bytes) -> dict:
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    return fields


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


# ---------------------------------------------------------------------- the process


def load_child() -> types.ModuleType:
    """`child.py` by its path, with the files it loads by path loaded now, once, before any fork."""
    spec = importlib.util.spec_from_file_location(CHILD_MODULE_NAME, CHILD_SOURCE)
    assert spec is not None and spec.loader is not None
    child = importlib.util.module_from_spec(spec)
    sys.modules[CHILD_MODULE_NAME] = child  # its dataclasses look their module up here
    spec.loader.exec_module(child)
    child.load_walls()
    child.load_copilot_file("copilot_model_outputs", child.MODEL_OUTPUTS_SOURCE)
    child.load_copilot_file("copilot_construction", child.CONSTRUCTION_SOURCE)
    return child


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    import torch

    torch.set_num_threads(1)
    child = load_child()
    control.send(encode(TemplateReply("ready", threads=thread_count())))
    while (request := _receive(control)) is not None:
        if request.kind != "fork":
            control.send(encode(TemplateReply("refused", reason=f"a {request.kind!r} request with no child to reap")))
            continue
        if not serve(control, request, child):
            return


def _receive(control: socket.socket) -> TemplateRequest | None:
    """The next request; None when the app is gone (or sent something that is not one)."""
    try:
        data = control.recv(MAX_MESSAGE_BYTES)
        return decode_request(data) if data else None
    except (OSError, ValueError, TypeError):
        return None


def serve(control: socket.socket, request: TemplateRequest, child: types.ModuleType) -> bool:
    """Fork one child for `request`, wait for it, reap it when told; False when the app is gone."""
    threads = thread_count()
    if threads > 1:
        control.send(encode(TemplateReply("refused", reason=f"the template process has {threads} threads; forking it is unsafe")))
        return True
    try:
        with open(request.job_path, encoding="utf-8") as job_file:
            job = child.SandboxJob.from_json(job_file.read())
        report_fd = os.open(request.report_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        stderr_fd = os.open(request.stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except (OSError, ValueError, TypeError, KeyError) as error:
        control.send(encode(TemplateReply("refused", reason=f"the template cannot read the job: {error}")))
        return True
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        become_child(child, job, report_fd, stderr_fd)
    os.close(report_fd)
    os.close(stderr_fd)
    try:
        control.send(encode(TemplateReply("started", pid=pid)))
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        control.send(encode(TemplateReply("exited", pid=pid)))
        told = _receive(control)
        app_gone = told is None or told.kind != "reap"
    except OSError:
        app_gone = True
    if app_gone:  # nobody will kill what the child left behind: do it here, then leave
        _kill_group(pid)
    _pid, status, usage = os.wait4(pid, 0)
    if app_gone:
        return False
    reaped = TemplateReply(
        "reaped",
        pid=pid,
        returncode=os.waitstatus_to_exitcode(status),
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_mb=usage.ru_maxrss / 1024,
    )
    try:
        control.send(encode(reaped))
    except OSError:
        return False
    return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def become_child(child: types.ModuleType, job: object, report_fd: int, stderr_fd: int) -> NoReturn:
    """The forked child: its own session, the check's files as stdout and stderr, nothing else of
    the template's open, the job's folder as home and scratch; then `child.check`, walls first."""
    try:
        os.setsid()
        os.dup2(report_fd, 1)
        os.dup2(stderr_fd, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the control socket first of all
        workdir = job.workdir  # type: ignore[attr-defined]
        os.chdir(workdir)
        walls = sys.modules[child.WALLS_MODULE_NAME]
        # The template's environment is already the allow-list; only home and scratch are the job's.
        environment = walls.allowed_environment(dict(os.environ), home=workdir, scratch=workdir)
        os.environ.clear()
        os.environ.update(environment)
        child.check(job)
    finally:
        os._exit(70)  # only when `check` could not even start; it ends the process itself


if __name__ == "__main__":
    main(int(sys.argv[1]))
