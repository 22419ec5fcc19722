"""metrics.jsonl on disk: a torn last line is cut before the next append and dropped by
readers, and a step replayed by a resumed trainer is counted once (its latest attempt)."""

from __future__ import annotations

from pathlib import Path

from copilot.events import EpochSummary, Rewound, StepBatch, StepRecord, event_to_json
from copilot.metrics_file import cut_torn_line, open_for_append, read_metrics, round_epochs


def step(number: int, loss: float) -> StepRecord:
    return StepRecord(epoch=0, step=number, loss=loss, accuracy=None, lr=0.1, total_grad_norm=1.0, samples_per_sec=1.0)


def epoch(number: int, attempt: int) -> EpochSummary:
    return EpochSummary(
        epoch=number, step=number * 2, train_loss=1.0, train_accuracy=None, val_loss=None, val_accuracy=None,
        lr=0.1, samples_per_sec=1.0, duration_s=1.0, attempt=attempt,
    )  # fmt: skip


def test_a_torn_last_line_is_cut_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    whole = event_to_json(StepBatch(records=(step(1, 2.0),))) + "\n"
    path.write_text(whole + '{"type":"steps","records":[{"epo', encoding="utf-8")
    assert [type(e) for e in read_metrics(path)] == [StepBatch], "a reader drops the torn line"

    metrics, attempt = open_for_append(path)
    metrics.append(event_to_json(StepBatch(records=(step(2, 1.5),), attempt=attempt)))
    metrics.close()
    assert path.read_text(encoding="utf-8").startswith(whole) and path.read_text().count("\n") == 2
    assert [r.step for e in read_metrics(path) if isinstance(e, StepBatch) for r in e.records] == [1, 2]
    cut_torn_line(path)  # a whole file is left alone
    assert path.read_text().count("\n") == 2


def test_readers_keep_the_latest_attempt_of_each_step_and_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        StepBatch(records=(step(1, 2.0), step(2, 1.9), step(3, 9.9))),
        epoch(1, attempt=1),
        StepBatch(records=(step(3, 1.8), step(4, 1.7)), attempt=2),  # resumed after step 2
        epoch(1, attempt=2),
    ]
    path.write_text("".join(event_to_json(line) + "\n" for line in lines), encoding="utf-8")
    events = read_metrics(path)
    steps = [(r.step, r.loss) for e in events if isinstance(e, StepBatch) for r in e.records]
    assert steps == [(1, 2.0), (2, 1.9), (3, 1.8), (4, 1.7)]
    assert [(e.epoch, e.attempt) for e in events if isinstance(e, EpochSummary)] == [(1, 2)]


def test_a_rewound_run_drops_what_the_abandoned_line_recorded_after_the_point_it_went_back_to(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        StepBatch(records=(step(1, 2.0), step(2, 1.9), step(3, 9.9), step(4, 99.0), step(5, 999.0))),
        epoch(1, attempt=1),
        epoch(2, attempt=1),  # steps 3-4: the blow-up
        Rewound(step=2, attempt=2),  # back to the checkpoint at step 2
        StepBatch(records=(step(3, 1.8),), attempt=2),  # the new line has re-done step 3 only, so far
    ]
    path.write_text("".join(event_to_json(line) + "\n" for line in lines), encoding="utf-8")
    events = read_metrics(path)
    steps = [(r.step, r.loss) for e in events if isinstance(e, StepBatch) for r in e.records]
    assert steps == [(1, 2.0), (2, 1.9), (3, 1.8)]  # steps 4 and 5 were never re-done, and are gone too
    assert [(e.epoch, e.attempt) for e in events if isinstance(e, EpochSummary)] == [(1, 1)]


def test_each_trainer_start_is_a_new_attempt(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first, attempt = open_for_append(path)
    first.close()
    assert attempt == 1
    path.write_text('{"type":"run_started","run_id":"x"}\n', encoding="utf-8")
    second, attempt = open_for_append(path)
    second.close()
    assert attempt == 2


def test_each_rounds_epochs_are_its_own_and_only_their_latest_attempt(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        epoch(1, attempt=1),
        epoch(2, attempt=1).model_copy(update={"round": 1}),
        epoch(2, attempt=2).model_copy(update={"round": 1, "val_loss": 0.5}),  # resumed: epoch 2 again
        epoch(3, attempt=2).model_copy(update={"round": 2}),
    ]
    path.write_text("".join(event_to_json(line) + "\n" for line in lines), encoding="utf-8")
    by_round = round_epochs(path, (0, 1))
    assert list(by_round) == [0, 1]
    assert [e.epoch for e in by_round[0]] == [1]
    assert [(e.epoch, e.attempt, e.val_loss) for e in by_round[1]] == [(2, 2, 0.5)]
    assert round_epochs(path, (5,)) == {5: []}  # a round with nothing on record yet
