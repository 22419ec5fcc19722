"""The report of a run: summary, decisions, tokens and cost, curves in text and PNG.

The run is trained by the real trainer (in this thread, on a small shapes set) and
assessed by the real offline workflow: one proposal rejected with a reason, the next
accepted. Runs with an experiment history are covered by tests/session.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from copilot.advisor.ledger import append_entry, read_ledger
from copilot.advisor.offline.advisor import OfflineAdvisor
from copilot.advisor.schemas import TokenUsage, Verdict
from copilot.advisor.snapshot import build_snapshot
from copilot.advisor.workflow import AdvisorSession
from copilot.config import Settings
from copilot.report import estimated_cost, price_of, write_report
from copilot.run_folder import RunFolder
from tests.advisor.conftest import SAMPLE_MODELS, train_sample_run

SONNET = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"


@pytest.fixture(scope="module")
def decided_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """bad_cnn trained 3 epochs; a proposal rejected with a reason, the next accepted; Bedrock tokens on one."""
    run = train_sample_run(tmp_path_factory.mktemp("run"), SAMPLE_MODELS / "bad_cnn.py", train_size=256, val_size=64)
    with AdvisorSession.open(run, OfflineAdvisor(), Settings()) as advisor:
        advisor.assess(build_snapshot(run, trigger="schedule"))
        advisor.decide(Verdict(decision="reject", reason="try the optimiser first"))
        advisor.assess(build_snapshot(run, previous=read_ledger(run), trigger="demand"))
        advisor.decide(Verdict(decision="accept"))
    accepted = read_ledger(run)[-1]
    usage = TokenUsage(provider="bedrock", model=SONNET, role="coder", input_tokens=12_000, output_tokens=3_000, latency_s=4.5)
    uncounted = TokenUsage(provider="openai", model="smollm2", role="assessor", input_tokens=900, output_tokens=60, latency_s=3.0, estimated=True)
    append_entry(run, accepted.model_copy(update={"tokens": [*accepted.tokens, usage, uncounted, uncounted]}))
    return run


def test_the_report_holds_the_summary_and_every_decision(decided_run: RunFolder) -> None:
    path = write_report(decided_run, advisor_name="offline")
    assert path == decided_run.report
    report = path.read_text(encoding="utf-8")
    entries = read_ledger(decided_run)
    rejected, accepted = entries
    assert report.startswith(f"# copilot report: {decided_run.run_id}")
    assert "| model | BadCNN from bad_cnn.py" in report
    assert "| epochs trained | 3 (" in report
    assert "| rounds | 0 after the baseline; 1 proposal rejected |" in report
    assert "## Rejected proposals" in report and "try the optimiser first" in report and rejected.proposal.summary in report
    assert "## Accepted proposals" in report and accepted.proposal.summary in report
    for finding in accepted.diagnosis.findings:
        assert finding.what in report
    if accepted.proposal.kind == "architecture":
        assert "```diff" in report and "+++ b/bad_cnn.py" in report


def test_tokens_time_and_an_estimated_cost_per_provider_and_role(decided_run: RunFolder) -> None:
    report = write_report(decided_run).read_text(encoding="utf-8")
    section = report.split("## Tokens and cost (estimate)")[1].split("\n## ")[0]
    # 12,000 in and 3,000 out at $3 / $15 per million tokens.
    assert f"| bedrock | {SONNET} | coder | 1 | 12,000 | 3,000 | 4.5 s (4.5 s a call) | $0.0810 |" in section
    # A server that sent no usage: copilot's own count, marked as such.
    assert "| openai | smollm2 | assessor | 2 | ~1,800 | ~120 | 6.0 s (3.0 s a call) | not in the price table |" in section
    assert "Counts marked ~ were made by copilot" in section
    assert "Estimated total: $0.0810" in section and "ESTIMATE" in section


def test_prices_come_from_the_table_by_model_id() -> None:
    assert price_of(SONNET) == (3.0, 15.0)
    assert price_of("us.anthropic.claude-3-5-haiku-20241022-v1:0") == (0.8, 4.0)
    assert price_of("qwen2.5-coder") is None
    usage = TokenUsage(provider="openai", model="qwen2.5-coder", role="assessor", input_tokens=10, output_tokens=10)
    assert estimated_cost(usage) is None
    assert estimated_cost(usage.model_copy(update={"provider": "offline", "model": "rules"})) == 0.0


def test_curves_are_plain_text_charts(decided_run: RunFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as where matplotlib is not installed
    for stale in decided_run.path.glob("*.png"):
        stale.unlink()
    report = write_report(decided_run).read_text(encoding="utf-8")
    curves = report.split("## Curves")[1]
    for title in ("### Loss", "### Accuracy", "### Total gradient norm"):
        assert title in curves
    assert "```text" in curves and "\x1b[" not in report
    assert any("\u2800" <= char <= "\u28ff" for char in curves), "plotext drew braille lines"
    assert "![" not in report and not list(decided_run.path.glob("*.png"))


def test_curves_as_png_files_with_matplotlib(decided_run: RunFolder) -> None:
    pytest.importorskip("matplotlib")
    report = write_report(decided_run).read_text(encoding="utf-8")
    for name in ("loss.png", "accuracy.png", "grad_norm.png"):
        assert (decided_run.path / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in report


def test_a_run_that_never_trained_still_gets_a_report(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "empty").create()
    report = write_report(run).read_text(encoding="utf-8")
    assert "## Summary" in report and "No advisor calls were recorded." in report and "## Curves" not in report
