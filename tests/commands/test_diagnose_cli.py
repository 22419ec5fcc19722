"""`copilot diagnose`: the offline advisor on real run folders, through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from copilot.advisor.snapshot import build_snapshot
from copilot.advisor.workflow import AdvisorSession
from copilot.cli import main
from copilot.console.advice import print_assessment
from copilot.config import load_settings
from tests.advisor.fake_converse import FakeConverse
from tests.advisor.scripted import ScriptedChecker, ScriptedRoles, hparam_answer, write_run


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder to run `copilot` in, with a wide terminal so tables do not wrap."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def files_in(folder: Path) -> dict[str, float]:
    return {str(path.relative_to(folder)): path.stat().st_mtime for path in folder.rglob("*")}


def test_diagnoses_the_latest_run_and_applies_nothing(project, capsys):
    write_run(project, run_id="20261120-110000-tiny-net-0001")
    latest = write_run(project, run_id="20261120-120000-tiny-net-0002")
    before = files_in(project)

    assert main(["diagnose"]) == 0

    out = capsys.readouterr().out
    assert "Run 20261120-120000-tiny-net-0002" in out and "advisor: offline" in out
    assert "CRITICAL" in out or "WARNING" in out
    assert "Findings" in out and "threshold" in out, "findings are shown with their evidence"
    assert "Proposal:" in out
    assert "Nothing was applied." in out
    assert files_in(project) == before, "no checkpoint, no ledger line, nothing touched"
    assert not latest.advisor_db.exists()


def test_a_named_crashed_run_gets_a_diagnosis_and_a_proposal(project, capsys):
    crashed = write_run(project, run_id="20261120-130000-tiny-net-0003", crash=True)
    write_run(project, run_id="20261120-140000-tiny-net-0004")

    assert main(["diagnose", "20261120-1300"]) == 0

    out = capsys.readouterr().out
    assert f"Run {crashed.run_id}" in out
    assert "Proposal:" in out or "No proposal:" in out


def test_no_runs_is_a_user_error_with_a_hint(project, capsys):
    assert main(["diagnose"]) == 2
    err = capsys.readouterr().err
    assert "error: no runs under" in err and "hint: start one with" in err


def test_runs_are_found_in_the_runs_dir_the_settings_name(project, capsys):
    run = write_run(project, run_id="20261120-150000-tiny-net-0005")
    (project / "copilot.toml").write_text('runs_dir = "elsewhere"\n', encoding="utf-8")
    (project / "elsewhere").mkdir()
    run.path.rename(project / "elsewhere" / run.run_id)  # where copilot.toml says runs go, not .copilot/runs

    assert main(["diagnose"]) == 0
    assert f"Run {run.run_id}" in capsys.readouterr().out
    assert main(["diagnose", "nosuch"]) == 2
    assert f"no run 'nosuch' under {project / 'elsewhere'}" in capsys.readouterr().err


def test_an_unknown_advisor_is_refused_by_the_parser(project, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["diagnose", "--advisor", "gpt"])
    assert raised.value.code == 2
    assert "invalid choice: 'gpt'" in capsys.readouterr().err


def test_an_unavailable_bedrock_falls_back_to_the_rules_with_a_notice(project, capsys, monkeypatch):
    write_run(project)
    with FakeConverse() as converse:
        converse.queue_error(500, "InternalServerException", "The server encountered an internal error.", times=8)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "AKIDTEST",
            "AWS_SECRET_ACCESS_KEY": "dummy-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(project / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(project / "no-aws-credentials"),
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": converse.base_url,
            "COPILOT_ADVISOR__BEDROCK__REGION": "us-east-1",
            "COPILOT_ADVISOR__BEDROCK__MAX_ATTEMPTS": "1",
        }.items():
            monkeypatch.setenv(name, value)

        assert main(["diagnose", "--advisor", "bedrock"]) == 0
        assert converse.model_ids()[0] == "us.anthropic.claude-3-7-sonnet-20250219-v1:0"

    out = capsys.readouterr().out
    assert "advisor: bedrock" in out
    assert "notice: bedrock was unavailable for the assessor" in out
    assert "the offline rules answered instead" in out
    assert "Proposal:" in out


def test_a_hyperparameter_proposal_prints_as_a_before_after_table(project):
    run = write_run(project)
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer("SGD with momentum", momentum=0.9, lr=0.05)])
    settings = load_settings(config_dir=project)
    pending = AdvisorSession.in_memory(roles, settings, check_code=ScriptedChecker()).assess(build_snapshot(run))
    console = Console(record=True, width=120)

    print_assessment(console, pending)

    lines = [" ".join(line.replace("│", " ").replace("┃", " ").split()) for line in console.export_text().splitlines()]
    assert "Proposal: SGD with momentum" in lines
    assert "hyperparameter before after" in lines
    assert "momentum 0 0.9" in lines and "lr 0.1 0.05" in lines
    assert "grad_norm = 3e-08 (threshold 1e-07)" in " ".join(lines)
    assert any(line.startswith("tokens: 200 in, 40 out over 2 call(s), ") and line.endswith(" s") for line in lines)
