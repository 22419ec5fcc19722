"""The sandbox child behind the same walls as a walled trainer, and what its verdict is worth.

The static check is a lint: an allowed module re-exports the interpreter and it passes.
The walls still contain that code. A pass can be forged by the checked code, so it is
shown as advisory, and the parent's own measurements replace any the child claims.
"""

from __future__ import annotations

import os
from pathlib import Path

from copilot.advisor.sandbox.parent import _run_in_child
from copilot.advisor.sandbox.static_lint import find_refusal
from copilot.advisor.schemas import SANDBOX_ADVISORY
from copilot.config import SandboxSettings
from copilot.tui.widgets.proposal import sandbox_summary
from tests.advisor.test_sandbox import IMAGES, model_code

SETTINGS = SandboxSettings(timeout_s=60, cpu_seconds=30)
FORWARD = "return self.linear(x.flatten(1))"
BUILTINS_THROUGH_TYPING = "import typing\nB = typing.stdlib_re.enum.bltns\n"
# Writes a passing report on every descriptor the report stream could be, then leaves before any check.
FORGER = """
import os
for descriptor in range(3, 12):
    try:
        os.write(descriptor, b'{"ok": true, "stage": "passed", "message": "passed", "observed_cpu_s": 0.0}\\n')
    except OSError:
        pass
os._exit(0)
"""


def unchecked(code: str):  # type: ignore[no-untyped-def]
    return _run_in_child(code, model_name="Model", model_args={}, data=IMAGES, expected_output=None, settings=SETTINGS)


def test_the_static_check_passes_builtins_reached_through_typing_and_the_walls_hold(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    code = model_code(f"{BUILTINS_THROUGH_TYPING}B.open({str(target)!r}, 'w').write('owned')\n{FORWARD}")
    assert find_refusal(code, SETTINGS.allowed_imports) is None  # a lint for honest mistakes, not a wall
    report = unchecked(code)
    assert not report.ok and "blocked" in report.message
    assert not target.exists()


def test_the_sandbox_child_has_a_network_namespace_of_its_own() -> None:
    report = unchecked(model_code(f"import os\nraise RuntimeError(os.readlink('/proc/self/ns/net'))\n{FORWARD}"))
    child_namespace = report.message.rsplit("RuntimeError: ", 1)[1]
    assert child_namespace.startswith("net:[") and child_namespace != os.readlink("/proc/self/ns/net")


def test_a_forged_pass_is_advisory_and_carries_the_parents_own_measurements() -> None:
    report = unchecked(FORGER.lstrip() + model_code(FORWARD))
    assert report.ok  # the child's claim: nothing in the child can be told apart from it
    assert report.observed_cpu_s is not None and report.observed_cpu_s > 0.0  # the parent's, not the forged 0.0
    assert report.observed_peak_mb is not None and report.observed_peak_mb > 0.0
    assert "advisory" in sandbox_summary(report).plain and SANDBOX_ADVISORY.startswith("advisory")
