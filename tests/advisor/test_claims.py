"""An LLM's diagnosis checked against a real run's measurements (the study's broken CNN at chance)."""

from __future__ import annotations

import pytest

from copilot.advisor.claims import checked_diagnosis, measured_values
from copilot.advisor.llm.roles import AssessorAnswer, LLMRoles
from copilot.advisor.schemas import Diagnosis, Evidence, Finding
from copilot.advisor.snapshot import TrainingSnapshot, build_snapshot
from copilot.config import load_settings
from tests.advisor.scripted import ScriptedProvider


@pytest.fixture(scope="module")
def at_chance(sample_runs) -> TrainingSnapshot:
    snapshot = build_snapshot(sample_runs("bad_cnn"))
    assert snapshot.trend("val_accuracy").last <= 0.15, "bad_cnn is expected at chance after the sample epochs"
    return snapshot


def nonsense() -> Diagnosis:
    """What a 135M-parameter model answered: fits the schema, says nothing true."""
    return Diagnosis(
        health="healthy",
        findings=[
            Finding(what="exploding gradients", evidence=[Evidence(metric="val_accuracy", value=0.93)], why="xq zr"),
            Finding(what="slow start", evidence=[Evidence(metric="banana_index", value=4.0)], why="lorem"),
        ],
        route="finish",
        summary="Training is healthy.",
    )


def test_a_nonsense_diagnosis_is_marked_contradicted_and_kept_off_the_finish_route(at_chance: TrainingSnapshot) -> None:
    checked = checked_diagnosis(nonsense(), at_chance)

    problems = "\n".join(checked.contradictions)
    assert "says healthy at" in problems and "chance is 10.0%" in problems
    assert "says gradients explode" in problems
    assert "cites val_accuracy = 0.93, but the measured values run" in problems
    assert "cites banana_index, which was not measured in this run" in problems
    assert "routes to finish, but the measurements call for" in problems
    assert checked.route != "finish"
    assert checked.findings == nonsense().findings, "the LLM's claims are shown as they were, marked, not dropped"
    assert checked.measured_findings, "the rules' own findings stand beside the LLM's"


def test_a_diagnosis_citing_what_was_measured_is_not_contradicted(at_chance: TrainingSnapshot) -> None:
    accuracy = at_chance.trend("val_accuracy").last
    gradients = at_chance.gradients
    truthful = Diagnosis(
        health="critical",
        findings=[
            Finding(
                what="accuracy at chance",
                evidence=[Evidence(metric="val_acc", value=round(accuracy * 100, 1)), Evidence(metric="grad_norm", value=gradients.total_max)],
                why="the model has learned nothing",
            )
        ],
        route="architecture",
        summary="Stuck at chance.",
    )

    checked = checked_diagnosis(truthful, at_chance)

    assert checked.contradictions == []
    assert checked.route == "architecture"


def test_every_cited_metric_name_the_snapshot_holds_is_known(at_chance: TrainingSnapshot) -> None:
    values = measured_values(at_chance)

    assert {"train_loss", "val_loss", "val_accuracy", "grad_norm", "lr", "initial_loss"} <= values.keys()
    assert at_chance.trend("val_accuracy").last in values["val_accuracy"]


def test_the_llm_assessor_passes_its_diagnosis_through_the_check(tmp_path, at_chance: TrainingSnapshot) -> None:
    answer = nonsense()
    provider = ScriptedProvider(
        [AssessorAnswer(health=answer.health, findings=answer.findings, route=answer.route, confidence=0.9, summary=answer.summary)]
    )
    settings = load_settings({"advisor": {"provider": "openai"}}, config_dir=tmp_path)

    diagnosis = LLMRoles(provider, settings).assess(at_chance).value

    assert diagnosis.contradictions and diagnosis.route != "finish"


def test_a_contradicted_diagnosis_that_would_change_nothing_takes_the_measured_route(at_chance: TrainingSnapshot) -> None:
    unchanged = nonsense().model_copy(update={"route": "continue", "findings": []})

    checked = checked_diagnosis(unchanged, at_chance)

    assert any(problem.startswith("routes to continue unchanged, but the measurements call for") for problem in checked.contradictions)
    assert checked.route in ("hyperparameters", "architecture"), "a run at chance is not left as it is on the model's word"
