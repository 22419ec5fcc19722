"""The template process: checks forked from one interpreter that imported torch, behind the same walls.

Each test starts its own `SandboxTemplate`, after setting the app's environment it
needs, and runs real checks through it (the static check bypassed with `_run_in_child`
where a payload must reach the walls). A payload reports what it found by raising it,
so the report's message carries it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from copilot.advisor.sandbox.parent import _run_in_child
from copilot.advisor.sandbox.template import SandboxTemplate
from copilot.advisor.schemas import SandboxReport
from copilot.walls import landlock_abi
from tests.advisor.test_sandbox import IMAGES, SETTINGS, model_code

FORWARD = "return self.linear(x.flatten(1))"
FAKE_SECRET = "template-canary-5b1e"
# Finds the audit hook's guard and switches it off: the hook is a lint, so what stops this code is the kernel.
GUARD_OFF = "import gc\nfor guard in [o for o in gc.get_objects() if type(o).__name__ == 'AuditGuard']:\n    guard.active = False\n"


@pytest.fixture
def template(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxTemplate]:
    """A template started while the app's environment holds credentials."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_SECRET)
    made = SandboxTemplate()
    made.start()
    yield made
    made.close()


def run(code: str, template: SandboxTemplate) -> SandboxReport:
    return _run_in_child(code, model_name="Model", model_args={}, data=IMAGES, expected_output=None, settings=SETTINGS, template=template)


def raised(report: SandboxReport) -> str:
    """What the payload raised as its RuntimeError."""
    assert "RuntimeError: " in report.message, report.message
    return report.message.rsplit("RuntimeError: ", 1)[1]


def test_a_forked_child_holds_no_credential_of_the_apps_environment(template: SandboxTemplate) -> None:
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET  # the app has it
    found = raised(run(model_code(f"import os\nraise RuntimeError(repr(sorted(os.environ.items())))\n{FORWARD}"), template))
    assert "AWS_SECRET_ACCESS_KEY" not in found and "OPENAI_API_KEY" not in found and FAKE_SECRET not in found
    assert "'OMP_NUM_THREADS', '1'" in found  # the allow-list's own
    # The forked child's /proc/self/environ is the template's exec environment: read it from outside.
    assert template.pid is not None
    exec_environment = Path(f"/proc/{template.pid}/environ").read_bytes()
    assert FAKE_SECRET.encode() not in exec_environment and b"OMP_NUM_THREADS=1" in exec_environment


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock on this kernel: files are not confined by it")
def test_a_forked_child_is_walled_by_the_kernel_when_its_audit_hook_is_switched_off(template: SandboxTemplate, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    payload = (
        f"{GUARD_OFF}open('inside.txt', 'w').write('ran')\n"  # the working folder: the positive control
        f"try:\n    open({str(outside)!r}, 'w').write('escaped')\n    escape = 'written'\n"
        "except OSError as error:\n    escape = type(error).__name__\n"
        f"raise RuntimeError(open('inside.txt').read() + ' ' + escape)\n{FORWARD}"
    )
    found = raised(run(model_code(payload), template))
    assert not outside.exists()
    assert found == "ran PermissionError"


def test_checks_fork_from_one_template_which_stays_single_threaded(template: SandboxTemplate) -> None:
    code = model_code(f"import os\nraise RuntimeError(os.getppid())\n{FORWARD}")
    parents = {raised(run(code, template)) for _ in range(3)}
    assert parents == {str(template.pid)}
    assert len(os.listdir(f"/proc/{template.pid}/task")) == 1  # forking stays safe


@pytest.mark.skipif(landlock_abi() < 6, reason="Landlock scopes signals from ABI 6 on")
def test_checked_code_cannot_kill_its_template(template: SandboxTemplate) -> None:
    code = model_code(f"{GUARD_OFF}import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)\n{FORWARD}")
    before = template.pid
    report = run(code, template)
    assert not report.ok and report.message.endswith("PermissionError: [Errno 1] Operation not permitted"), report.message
    assert run(model_code(FORWARD), template).ok
    assert template.pid == before  # the same template served the next check


def test_a_template_that_died_is_started_again(template: SandboxTemplate) -> None:
    assert run(model_code(FORWARD), template).ok
    dead = template.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    os.waitid(os.P_PID, dead, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped by its client
    report = run(model_code(FORWARD), template)
    assert report.ok and report.notice == ""
    assert template.pid not in (None, dead)


def test_without_a_template_a_check_runs_in_a_fresh_interpreter_and_says_so_once() -> None:
    unusable = SandboxTemplate(interpreter="/nonexistent/python")
    first, second = run(model_code(FORWARD), unusable), run(model_code(FORWARD), unusable)
    assert first.ok and second.ok
    assert first.notice.startswith("sandbox checks start a fresh interpreter each") and "could not start" in first.notice
    assert second.notice == ""
