"""Hostile model code: every snippet is refused by the static check or stopped in the child, with a reason.

The child's own walls (limits, audit hook, Landlock, scrubbed environment) are tested
with the static check bypassed through the private `_run_in_child`, as if a snippet had
slipped past it. Limits are short so a runaway is stopped in seconds.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from copilot.advisor.sandbox.parent import _run_in_child, check_model_code
from copilot.walls import landlock_abi
from copilot.advisor.schemas import SandboxReport
from copilot.config import SandboxSettings
from tests.advisor.test_sandbox import IMAGES, model_code

HOSTILE = SandboxSettings(timeout_s=30, cpu_seconds=10)
FORWARD = "return self.linear(x.flatten(1))"


def _unchecked(code: str, settings: SandboxSettings = HOSTILE) -> SandboxReport:
    """Run `code` in the child as if it had passed the static check."""
    return _run_in_child(code, model_name="Model", model_args={}, data=IMAGES, expected_output=None, settings=settings)


def _checked(code: str, settings: SandboxSettings = HOSTILE) -> SandboxReport:
    return check_model_code(code, model_name="Model", model_args={}, data=IMAGES, settings=settings)


def _line_of(code: str, text: str) -> int:
    return next(number for number, line in enumerate(code.splitlines(), start=1) if text in line)


# ---------------------------------------------------------------------------------- refused statically

HOSTILE_SNIPPETS = {
    "fork loop": ("import os\nwhile True:\n    os.fork()", "import of 'os'"),
    "fork through torch": ("import torch.multiprocessing as mp\nmp.Process(target=print).start()", "torch.multiprocessing"),
    "fork through torch.os": ("torch.os.fork()", "torch.os"),
    "os.system": ("import os\nos.system('touch pwned')", "import of 'os'"),
    "subprocess": ("import subprocess\nsubprocess.run(['ls'])", "import of 'subprocess'"),
    "socket connect": ("import socket\nsocket.create_connection(('127.0.0.1', 80))", "import of 'socket'"),
    "file write": ("open('/tmp/escaped.txt', 'w').write('x')", "call to open()"),
    "torch.save": ("torch.save(x, '/tmp/escaped.pt')", "torch.save"),
    "environment secrets": ("import os\nprint(os.environ)", "import of 'os'"),
    "ctypes through torch": ("torch.ctypes.CDLL(None)", "torch.ctypes"),
    "builtins through a class walk": ("x.__class__.__mro__[-1].__subclasses__()", "access to attribute __subclasses__"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SNIPPETS))
def test_hostile_snippets_are_refused_statically_with_line_and_construct(name: str) -> None:
    snippet, construct = HOSTILE_SNIPPETS[name]
    code = model_code(f"{snippet}\n{FORWARD}")
    report = _checked(code)
    assert (report.ok, report.stage) == (False, "static")
    assert report.line == _line_of(code, snippet.splitlines()[0])
    assert report.message.startswith(f"line {report.line}: {construct}")


# ---------------------------------------------------------------------------------- time


@pytest.mark.slow
def test_an_endless_loop_in_init_is_stopped_by_the_wall_clock() -> None:
    code = model_code(FORWARD, "self.linear = nn.Linear(3 * 8 * 8, 10)\nwhile True:\n    pass")
    report = _checked(code, SandboxSettings(timeout_s=12, cpu_seconds=60))
    assert (report.ok, report.stage) == (False, "timeout")
    assert report.message.startswith("wall-clock limit of 12 s exceeded during instantiate")
    assert report.line in (_line_of(code, "while True"), _line_of(code, "pass"))


@pytest.mark.slow
def test_an_endless_loop_in_forward_is_stopped_by_the_cpu_limit() -> None:
    code = model_code(f"total = 0\nwhile True:\n    total += 1\n{FORWARD}")
    report = _checked(code, SandboxSettings(timeout_s=60, cpu_seconds=4))
    assert (report.ok, report.stage) == (False, "timeout")
    assert report.message.startswith("CPU-time limit of 4 s exceeded during forward")
    assert report.line in (_line_of(code, "while True"), _line_of(code, "total += 1"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (SandboxSettings(timeout_s=10, cpu_seconds=60), "wall-clock limit of 10 s exceeded during instantiate; the process was killed"),
        (SandboxSettings(timeout_s=60, cpu_seconds=4), "CPU-time limit of 4 s exceeded during instantiate"),
    ],
    ids=["wall-clock kill", "cpu hard limit"],
)
def test_a_loop_that_swallows_every_interruption_is_killed(settings: SandboxSettings, reason: str) -> None:
    code = model_code(
        FORWARD,
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
    )
    report = _checked(code, settings)
    assert (report.ok, report.stage, report.message) == (False, "timeout", reason)


# ---------------------------------------------------------------------------------- memory


def test_a_50_gb_tensor_is_stopped_by_the_memory_limit() -> None:
    code = model_code(f"waste = torch.empty(50 * 10**9, dtype=torch.uint8)\n{FORWARD}")
    report = _checked(code)
    assert (report.ok, report.stage) == (False, "memory")
    line = _line_of(code, "waste = torch.empty")
    assert report.message == f"memory limit of 4096 MB exceeded during forward at line {line} (tried to allocate 50.0 GB)"


def test_a_50_gb_bytearray_is_stopped_by_the_memory_limit() -> None:
    code = model_code(FORWARD, "self.linear = nn.Linear(3 * 8 * 8, 10)\nself.waste = bytearray(50 * 10**9)")
    report = _checked(code)
    assert (report.ok, report.stage) == (False, "memory")
    assert report.message == f"memory limit of 4096 MB exceeded during instantiate at line {_line_of(code, 'bytearray')}"


def test_the_memory_limit_is_the_sandboxs_not_the_machines() -> None:
    # 2 GB of untouched memory is granted lazily by Linux; only the address-space limit refuses it.
    code = model_code(f"waste = torch.empty(2 * 1024**3, dtype=torch.uint8)\n{FORWARD}")
    assert _checked(code, HOSTILE.model_copy(update={"memory_mb": 4096})).ok
    report = _checked(code, HOSTILE.model_copy(update={"memory_mb": 1024}))
    assert (report.stage, report.message) == (
        "memory",
        f"memory limit of 1024 MB exceeded during forward at line {_line_of(code, 'waste')} (tried to allocate 2.1 GB)",
    )


def test_memory_filled_step_by_step_is_still_reported() -> None:
    code = model_code(f"kept = []\nwhile True:\n    kept.append(torch.ones(16 * 1024 * 1024))\n{FORWARD}")
    report = _checked(code, HOSTILE.model_copy(update={"memory_mb": 1024}))
    assert (report.ok, report.stage) == (False, "memory")
    assert report.line == _line_of(code, "kept.append")


# ---------------------------------------------------------------------------------- processes


# Snippets that got past the static check, the action the audit hook must refuse, and
# the report's message ({target}: a file outside the sandbox, {parent}: this process).
ESCAPES_PAST_THE_STATIC_CHECK = {
    "fork loop": ("import os\nfor _ in range(100):\n    os.fork()", "os.fork()", "os.fork()"),
    "os.system": ("import os\nos.system('touch {target}')", "os.system", "os.system(b'touch {target}')"),
    "signal the app": ("import os\nos.kill({app}, 0)", "os.kill", "os.kill({app}, 0)"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).system(b'true')", "ctypes.CDLL", "ctypes.dlopen(None)"),
    "file write": ("open('{target}', 'w').write('x')", "open(", "writing '{target}' (outside the sandbox's working folder)"),
    "torch.save": ("torch.save(x, '{target}')", "torch.save", "writing '{target}' (outside the sandbox's working folder)"),
}


@pytest.mark.parametrize("name", sorted(ESCAPES_PAST_THE_STATIC_CHECK))
def test_escapes_past_the_static_check_are_blocked_by_the_audit_hook(name: str, tmp_path: Path) -> None:
    snippet, action, blocked = (
        text.format(target=tmp_path / "escaped", app=os.getpid()) for text in ESCAPES_PAST_THE_STATIC_CHECK[name]
    )
    code = model_code(f"{snippet}\n{FORWARD}")
    report = _unchecked(code)
    line = _line_of(code, action)
    assert (report.ok, report.stage, report.line) == (False, "forward", line)
    assert report.message == f"the sandbox blocked {blocked} during forward at line {line}"
    assert not (tmp_path / "escaped").exists()


def test_fork_inside_a_library_past_the_static_check_is_blocked() -> None:
    code = model_code(
        "from torch.utils.data import DataLoader, TensorDataset\n"
        f"batches = list(DataLoader(TensorDataset(x), num_workers=2))\n{FORWARD}"
    )
    report = _unchecked(code)
    assert (report.ok, report.stage) == (False, "forward")
    # With Landlock the worker queue's shared-memory semaphore is refused before the fork is tried.
    stopped_by = "the sandbox's kernel confinement refused" if landlock_abi() >= 1 else "the sandbox blocked os.fork()"
    assert report.message.startswith(stopped_by)


def test_a_socket_connect_past_the_static_check_is_blocked() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = model_code(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n{FORWARD}")
        report = _unchecked(code)
        assert (report.ok, report.stage) == (False, "forward")
        assert report.message.startswith("the sandbox blocked socket.")
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_a_child_that_dies_without_a_report_is_reported_as_crashed() -> None:
    code = model_code(f"import os\nos.abort()\n{FORWARD}")
    report = _unchecked(code)
    assert (report.ok, report.stage) == (False, "crashed")
    assert report.message == "the sandbox child was killed by SIGABRT during forward without a report"
    # The tail of the child's stderr, where faulthandler names the generated line.
    assert f'File "<generated model>", line {_line_of(code, "os.abort")}' in report.traceback


# ---------------------------------------------------------------------------------- files


@pytest.mark.skipif(landlock_abi() < 1, reason="the kernel has no Landlock; the audit hook alone guards files")
def test_native_code_writing_outside_the_temp_folder_is_refused_by_the_kernel(tmp_path: Path) -> None:
    # A TorchScript module saves itself in C++, where no audit event is raised.
    target = tmp_path / "escaped_script.pt"
    code = model_code(f"torch.jit.script(nn.Linear(2, 2)).save({str(target)!r})\n{FORWARD}")
    report = _unchecked(code)
    assert (report.ok, report.stage) == (False, "forward")
    assert report.message.startswith("the sandbox's kernel confinement refused a file or network action during forward")
    assert not target.exists()


def test_writing_inside_the_temp_folder_works_and_the_folder_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = model_code(f"open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n{FORWARD}")
    report = _unchecked(code)
    assert report.ok, report
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- secrets

FAKE_SECRET = "fake-secret-for-the-sandbox-test"


def test_the_child_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD"):
        monkeypatch.setenv(name, FAKE_SECRET)
    code = model_code(
        "import os\n"
        "raise RuntimeError('names=' + ','.join(sorted(os.environ)) + ' secret=' + str(os.environ.get('AWS_SECRET_ACCESS_KEY')))"
    )
    report = _unchecked(code)
    assert report.stage == "forward"
    assert "secret=None" in report.message
    names = report.message.split("names=")[1].split(" ")[0].split(",")
    assert not [name for name in names if any(word in name for word in ("AWS", "OPENAI", "TOKEN", "KEY", "SECRET", "PASSWORD"))]
    assert FAKE_SECRET not in report.model_dump_json()


def test_the_parents_environment_cannot_be_read_through_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    # The app's own process (the child's parent is the template, whose environment is the allow-list).
    code = model_code(f"import os\nraise RuntimeError(open('/proc/{os.getpid()}/environ').read())\n{FORWARD}")
    report = _unchecked(code)
    assert report.message.startswith(f"the sandbox blocked reading '/proc/{os.getpid()}/environ'")
    assert FAKE_SECRET not in report.model_dump_json()
