"""Checks generated or edited model code before anyone trains with it.

Owns the sandbox's parent side: the static check (`copilot.advisor.sandbox.static_lint`),
then one child process per check (`child.py`), forked from the template process that
imported torch once (`copilot.advisor.sandbox.template`) or, where none can be had,
started with `python -I -B`: in a new session, a scrubbed environment built from an
allow-list (no AWS_*, no tokens, no keys), a temporary working folder deleted
afterwards, and a wall-clock timeout after which the whole process group is killed.
Whatever the child did (a JSON report, a crash, a timeout, an out-of-memory death)
becomes one `SandboxReport` for the fixer and the human.

It never runs generated code in this process, and `check_model_code` never raises for
bad code: every failure is a report with `ok=False`. A pass is advisory: it is what the
checked code's own process wrote, which that code can forge (`SANDBOX_ADVISORY`); the
parent adds what it measured itself (`observed_*`), and accepted code runs walled anyway.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from copilot.advisor.sandbox.child import SandboxJob
from copilot.advisor.sandbox.static_lint import find_refusal, static_check
from copilot.advisor.sandbox.template import ChildExit, SandboxTemplate, sandbox_environment, shared_template
from copilot.advisor.schemas import SandboxReport
from copilot.config import SandboxSettings
from copilot.events import DataSpec, ForwardContract

__all__ = ["SANDBOX_BATCH_SIZE", "check_model_code", "static_check"]

# The dummy batch's size; an `expected_output` given by a caller starts with it.
SANDBOX_BATCH_SIZE = 4
CHILD_SCRIPT = Path(__file__).with_name("child.py")
STDERR_TAIL_CHARS = 2000
# The child's own alarm rings this long before the parent kills it, so a Python-level
# endless loop is reported with its line instead of a bare kill.
ALARM_HEAD_START_S = 1.5


def check_model_code(
    code: str,
    *,
    model_name: str | None,
    model_args: Mapping[str, object],
    data: DataSpec,
    expected_output: tuple[int, ...] | None = None,
    forward_contract: ForwardContract | None = None,
    settings: SandboxSettings,
    template: SandboxTemplate | None = None,
) -> SandboxReport:
    """Statically check `code`, then import, build, run and backpropagate it in a limited child.

    `model_name` is the run's model reference (`file.py:Name`), None where the file's own
    rule picks the model (build_model(), else its one top-level class), as for the trainer.
    `forward_contract` is the run's: a proposal that changes its forward signature or output form fails.

    `expected_output` is the output shape for a batch of `SANDBOX_BATCH_SIZE` samples;
    by default the shape the data's task requires. The child is forked from `template`
    (by default the app's shared one).
    """
    refusal = find_refusal(code, settings.allowed_imports)
    if refusal is not None:
        return SandboxReport(ok=False, stage="static", message=f"{refusal.message}; {refusal.hint}", line=refusal.line)
    return _run_in_child(
        code,
        model_name=model_name,
        model_args=model_args,
        data=data,
        expected_output=expected_output,
        forward_contract=forward_contract,
        settings=settings,
        template=template,
    )


@dataclass(frozen=True)
class _ChildOutcome:
    records: list[dict]  # the JSON lines the child wrote on its report stream
    exit: ChildExit  # its cpu_s and peak_mb measured by the kernel for the parent (wait4), not reported by the child
    stderr_tail: str


def _run_in_child(
    code: str,
    *,
    model_name: str | None,
    model_args: Mapping[str, object],
    data: DataSpec,
    expected_output: tuple[int, ...] | None,
    settings: SandboxSettings,
    template: SandboxTemplate | None = None,
    forward_contract: ForwardContract | None = None,
) -> SandboxReport:
    """The child-process part of `check_model_code`, without the static check.

    Private: tests call it directly to prove the child's own walls hold when hostile code
    gets past the static check.
    """
    expected = tuple(expected_output or data.expected_output(SANDBOX_BATCH_SIZE))
    with tempfile.TemporaryDirectory(prefix="copilot-sandbox-", ignore_cleanup_errors=True) as root:
        # The job and the child's output live beside, not inside, the folder the model may write.
        workdir = Path(root) / "work"
        workdir.mkdir()
        job = SandboxJob(
            code=code,
            model_name=model_name,
            keep_form=forward_contract.form if forward_contract else None,
            keep_passes_targets=forward_contract.passes_targets if forward_contract else None,
            model_args=dict(model_args),
            task=data.task,
            input_shape=data.input_shape,
            input_dtype=data.input_dtype,
            num_classes=data.num_classes,
            expected_shape=expected,
            max_params=settings.max_params,
            cpu_seconds=settings.cpu_seconds,
            memory_mb=settings.memory_mb,
            timeout_s=settings.timeout_s,
            alarm_s=max(settings.timeout_s - ALARM_HEAD_START_S, settings.timeout_s * 0.8),
            workdir=str(workdir),
        )
        job_path = Path(root) / "job.json"
        job_path.write_text(job.to_json(), encoding="utf-8")
        template = template or shared_template()
        outcome = _run_child(job_path, workdir, Path(root), settings.timeout_s, template)
    # Set here, after the child's own fields: a report claiming its own measurements is overwritten.
    report = _report_from(outcome, job).model_copy(
        update={"observed_cpu_s": outcome.exit.cpu_s, "observed_peak_mb": outcome.exit.peak_mb}
    )
    notice = template.fallback_notice()
    return report.model_copy(update={"notice": notice}) if notice else report


def _run_child(job_path: Path, workdir: Path, root: Path, timeout_s: float, template: SandboxTemplate) -> _ChildOutcome:
    # Files rather than pipes: the child's RLIMIT_FSIZE caps a flood of output, and no pipe can fill up.
    report_path, stderr_path = root / "report.jsonl", root / "stderr.txt"
    report_path.touch()
    stderr_path.touch()
    child_exit = template.run_child(job_path, report_path, stderr_path, timeout_s)
    if child_exit is None:
        child_exit = _run_fresh_child(job_path, workdir, report_path, stderr_path, timeout_s)
    records = []
    for line in report_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    with open(stderr_path, "rb") as stderr_file:
        stderr_file.seek(max(0, stderr_path.stat().st_size - STDERR_TAIL_CHARS))
        stderr_tail = stderr_file.read().decode("utf-8", errors="replace")
    return _ChildOutcome(records, child_exit, stderr_tail)


def _run_fresh_child(job_path: Path, workdir: Path, report_path: Path, stderr_path: Path, timeout_s: float) -> ChildExit:
    """The check in a fresh interpreter, which imports torch itself: where no template can be had."""
    with open(report_path, "wb") as report_file, open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(CHILD_SCRIPT), str(job_path)],
            stdin=subprocess.DEVNULL,
            stdout=report_file,
            stderr=stderr_file,
            cwd=workdir,
            env=sandbox_environment(workdir),
            start_new_session=True,
        )
    # A pidfd says when the child ends without polling; wait4 then gives what the kernel measured of it.
    pidfd = os.pidfd_open(process.pid)
    try:
        killed = not select.select([pidfd], [], [], timeout_s)[0]
    finally:
        os.close(pidfd)
        # The whole group: anything the child managed to start goes with it.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return ChildExit(process.returncode, killed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def _report_from(outcome: _ChildOutcome, job: SandboxJob) -> SandboxReport:
    """The child's own report if it wrote one; otherwise what its death tells."""
    reports = [record for record in outcome.records if "ok" in record]
    stages = [record["stage"] for record in outcome.records if "stage" in record and "ok" not in record]
    stage = stages[-1] if stages else "startup"
    if reports:
        try:
            report = SandboxReport.model_validate(reports[-1])
        except ValidationError as error:
            problem = error.errors()[0]
            message = f"the sandbox child wrote an invalid report ({problem['loc']}: {problem['msg']})"
            return _dead_child_report("crashed", message, outcome, job)
        # A failure report stands even if the child was slow to exit; a pass must also exit in time.
        if not (report.ok and outcome.exit.killed_by_parent):
            return report
        stage = "exit"
    if outcome.exit.killed_by_parent:
        message = f"wall-clock limit of {job.timeout_s:g} s exceeded during {stage}; the process was killed"
        return _dead_child_report("timeout", message, outcome, job)
    if any("cpu_limit" in record for record in outcome.records) or outcome.exit.returncode == -signal.SIGXCPU:
        return _dead_child_report("timeout", f"CPU-time limit of {job.cpu_seconds} s exceeded during {stage}", outcome, job)
    if "MemoryError" in outcome.stderr_tail or "bad_alloc" in outcome.stderr_tail:
        message = f"memory limit of {job.memory_mb} MB exceeded during {stage}"
        return _dead_child_report("memory", message, outcome, job)
    message = f"the sandbox child {_describe_exit(outcome.exit.returncode)} during {stage} without a report"
    return _dead_child_report("crashed", message, outcome, job)


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _dead_child_report(
    stage: Literal["timeout", "memory", "crashed"], message: str, outcome: _ChildOutcome, job: SandboxJob
) -> SandboxReport:
    return SandboxReport(
        ok=False,
        stage=stage,
        message=message,
        expected_shape=job.expected_shape,
        traceback=outcome.stderr_tail.strip(),
    )
