"""The advisor against Optuna on the same budget: which finds better hyperparameters for a sound model?

Each sample model has a sound architecture and poor hyperparameters (a rate far too low,
one far too high, Adam with a crushing weight decay). Per model and seed, the run first
trains one epoch with its poor values (the fork), then three searches get N trials each
from that same checkpoint, every trial training the same number of training samples (four
epochs' worth)
(batch size is in the space, so the budget is samples, not steps):

- advisor: the offline advisor given N tries with feedback: trial 0 is the current values,
  then each try is its proposal on the best trial so far, measured, and recorded as
  accepted (better) or rejected with the measured loss as the reason, which it reads next;
- tpe and random: `copilot tune`'s study (trial 0 the current values, no advisor guess
  enqueued, the median pruner on), with Optuna's TPE or random sampler.

TPE's first ten trials are its random start-up, drawn from the same seed as the random
search's: at 11 trials the two differ only in the last one (measured: identical picks),
so TPE's own model needs more trials than --quick gives.

Each search's pick is its best trial by validation loss; its end checkpoint is then scored
on a test split no trial saw (the shapes set drawn with another seed). Printed: per model
the mean and spread of test accuracy over the seeds, the wall time of each search, the
pick's accuracy against the advisor's (a ratio measured in this run); last line one JSON
object of every figure. Whichever wins is reported as it is.

    python benchmarks/tune_vs_advisor.py --quick    # 3 models, 3 seeds, 11 trials, small data (about 30 min a
                                                    # model and seed on a loaded 2-core machine)
    python benchmarks/tune_vs_advisor.py --quick --seeds 1 --trials 4   # a smoke run
    python benchmarks/tune_vs_advisor.py            # 3 models, 5 seeds, 20 trials, more data
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copilot.advisor.offline.advisor import OfflineAdvisor  # noqa: E402
from copilot.advisor.schemas import ArmResult, HParamProposal, LedgerEntry, TrialPoint, Verdict  # noqa: E402
from copilot.advisor.snapshot import build_snapshot  # noqa: E402
from copilot.advisor.trials.budget import TrialBudget, evaluation_points  # noqa: E402
from copilot.advisor.trials.runner import INCUMBENT, Arm, TrialRunner  # noqa: E402
from copilot.config import DataSettings, TrainSettings, TrialSettings  # noqa: E402
from copilot.events import Finished, HParams, ModelRef  # noqa: E402
from copilot.run_folder import RunFolder  # noqa: E402
from copilot.training.launcher import TrainerProcess, TrainerSpec  # noqa: E402
from copilot.tuning.study import TunePlan, Tuner, TuneRequest, describe, new_plan  # noqa: E402

MODELS = {
    "healthy_cnn, SGD lr 1e-4": (ROOT / "benchmarks" / "models" / "healthy_converged.py", {"optimizer": "SGD", "lr": 1e-4}),
    "exploding_lr_cnn, SGD lr 3 momentum 0.9": (ROOT / "sample_models" / "exploding_lr_cnn.py", {}),
    "resnet_small, Adam lr 0.01 weight decay 0.5": (
        ROOT / "sample_models" / "resnet_small.py", {"optimizer": "Adam", "lr": 0.01, "weight_decay": 0.5, "schedule": "constant"},
    ),
}
METHODS = ("advisor", "tpe", "random")
TRIAL_EPOCHS = 4  # each trial's budget: this many passes over the training set, in samples
TEST_SEED_OFFSET = 1000  # the test split is the shapes set drawn with this seed added: no trial saw it


@dataclass(frozen=True)
class Outcome:
    model: str
    seed: int
    method: str
    test_accuracy: float
    best_val_loss: float
    wall_time_s: float
    picked: str  # the pick's values against the current ones


def always(_point: TrialPoint) -> bool:
    return True


def fork_run(model: Path, overrides: dict[str, object], folder: Path, data: DataSettings, seed: int) -> TrainerSpec:
    """Train the poor values one epoch; the spec trials start from, with its checkpoint as `resume_from`."""
    spec = TrainerSpec(
        run_folder=folder, model=ModelRef(path=model), data=data,
        train=TrainSettings(device="cpu", seed=seed, hparams={**overrides, "epochs": 1}),
    )  # fmt: skip
    trainer = TrainerProcess(spec)
    trainer.start()
    while not any(isinstance(event, Finished) for event in trainer.poll(timeout=0.5)):
        if not trainer.is_alive and trainer.exitcode is not None:
            break
    trainer.stop(10.0)
    checkpoint = RunFolder(folder).latest_checkpoint()
    assert checkpoint is not None, f"the fork run of {model.name} wrote no checkpoint"
    return spec.model_copy(update={"resume_from": checkpoint})


def plan_for(spec: TrainerSpec, data: DataSettings, settings: TrialSettings, trials: int, seed: int) -> TunePlan:
    """The study's plan at the fork (`TRIAL_EPOCHS` of samples a trial, no advisor guess enqueued): the advisor's
    tries use its budget and its epoch budget too, so every method trains the same samples the same way."""
    from copilot.training.checkpoints import load_checkpoint

    assert spec.resume_from is not None
    fork = load_checkpoint(spec.resume_from)
    return new_plan(
        TuneRequest(trials=trials, sampler="tpe", budget_epochs=TRIAL_EPOCHS), current=fork.hparams, advisor=None, fork=spec.resume_from,
        fork_step=fork.step, train_size=data.train_size or 0, seed=seed, settings=settings,
    )  # fmt: skip


def runner_for(spec: TrainerSpec, folder: Path, data: DataSettings, settings: TrialSettings) -> TrialRunner:
    return TrialRunner(
        spec.model_copy(update={"resume_from": None}), spec.resume_from, folder, settings,
        task="classification", val_samples=min(settings.val_samples, data.val_size or 0), round_number=1,
    )  # fmt: skip


def test_accuracy(checkpoint: Path, data: DataSettings) -> float:
    """The checkpoint's model on the test split (the validation part of another draw of the set)."""
    import torch

    from copilot.training.checkpoints import load_checkpoint
    from copilot.training.data import iterate_batches, load_data
    from copilot.training.models import load_model

    saved = load_checkpoint(checkpoint)
    bundle = load_data(data, torch.device("cpu"))
    model = load_model(saved.model.kept, bundle.spec).model
    model.load_state_dict(saved.model_state)
    model.eval()
    right = total = 0
    with torch.no_grad():
        for inputs, targets in iterate_batches(bundle.val, 256, shuffle=False, generator=None, device=torch.device("cpu")):
            right += int((model(inputs).argmax(dim=-1) == targets).sum())
            total += len(targets)
    return right / total


def run_study(plan: TunePlan, spec: TrainerSpec, folder: Path, data: DataSettings, settings: TrialSettings) -> tuple[Path, float, str]:
    """`copilot tune`'s study with the plan's sampler: its best trial's end state, loss and values."""
    run = RunFolder(folder)
    result = Tuner(run, "tune", plan, runner_for(spec, run.trials / "tune", data, settings), settings).run()
    best = result.best
    assert best is not None and best.val_loss is not None, f"{plan.sampler}: no trial completed"
    checkpoint = RunFolder(run.trials / "tune" / (INCUMBENT if best.number == 0 else f"t{best.number}")).latest_checkpoint()
    assert checkpoint is not None
    return checkpoint, best.val_loss, describe(best.hparams, plan.start)


def run_advisor(plan: TunePlan, spec: TrainerSpec, folder: Path, data: DataSettings, settings: TrialSettings) -> tuple[Path, float, str]:
    """The offline advisor's tries with feedback, each from the fork, each its proposal on the best trial so far."""
    runner = runner_for(spec, folder / "advisor", data, settings)
    source = spec.model.path.read_text(encoding="utf-8")

    def measured(name: str, summary: str, hparams: HParams) -> ArmResult:
        changes = {key: value for key, value in hparams.model_dump().items() if getattr(plan.current, key) != value}
        steps = plan.steps_for(hparams.batch_size)
        budget = TrialBudget(steps=steps, evaluate_at=evaluation_points(steps, plan.evaluations), step_time_s=None)
        return runner.run_arm(Arm(name, summary, hparam_changes=changes), budget, always)

    best_arm, best_hparams = measured(INCUMBENT, "unchanged", plan.start), plan.start
    assert best_arm.final is not None, f"the current values failed their trial: {best_arm.message}"
    roles, previous = OfflineAdvisor(), []
    for attempt in range(1, plan.trials):
        snapshot = build_snapshot(RunFolder(Path(best_arm.folders[0])), source_code=source, previous=previous, round=attempt)
        diagnosis = roles.assess(snapshot).value
        answer = roles.propose_hparams(snapshot, diagnosis, None).value
        tried = answer.change.apply_to(best_hparams)
        arm = measured(f"a{attempt}", answer.summary, tried)
        better = arm.status == "measured" and arm.final is not None and arm.final.val_loss < best_arm.final.val_loss
        figures = f"val loss {arm.final.val_loss:.4f}" if arm.final is not None else arm.message or arm.status
        verdict = Verdict(decision="accept") if better else Verdict(decision="reject", reason=f"measured {figures}, no better than {best_arm.final.val_loss:.4f}")
        proposal = HParamProposal(summary=answer.summary, rationale=answer.rationale, change=answer.change, before=best_hparams, after=tried)
        previous.append(LedgerEntry(time=time.time(), run_id="bench", round=attempt, epoch=1, trigger="schedule", diagnosis=diagnosis, proposal=proposal, verdict=verdict))
        if better:
            best_arm, best_hparams = arm, tried
    checkpoint = RunFolder(Path(best_arm.folders[0])).latest_checkpoint()
    assert checkpoint is not None
    return checkpoint, best_arm.final.val_loss, describe(best_hparams, plan.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 11 trials, small data")
    parser.add_argument("--only", nargs="*", choices=list(MODELS), help="these models only")
    parser.add_argument("--seeds", type=int, help="seeds per model (a smoke run: fewer than the defaults)")
    parser.add_argument("--trials", type=int, help="trials per search (a smoke run: fewer than the defaults)")
    args = parser.parse_args()
    seeds, trials = (3, 11) if args.quick else (5, 20)
    seeds, trials = args.seeds or seeds, args.trials or trials
    sizes = {"train_size": 512, "val_size": 128} if args.quick else {"train_size": 2048, "val_size": 256}
    test_size = 512 if args.quick else 2048
    settings = TrialSettings(val_samples=sizes["val_size"])
    outcomes: list[Outcome] = []
    for name in args.only or list(MODELS):
        model, overrides = MODELS[name]
        for seed in range(seeds):
            data = DataSettings(seed=seed, **sizes)
            test = DataSettings(seed=seed + TEST_SEED_OFFSET, train_size=sizes["train_size"], val_size=test_size)
            with tempfile.TemporaryDirectory(prefix="tune-bench-") as scratch:
                spec = fork_run(model, overrides, Path(scratch) / "run", data, seed)
                plan = plan_for(spec, data, settings, trials, seed)
                for method in METHODS:
                    started = time.monotonic()
                    folder = Path(scratch) / method
                    folder.mkdir()
                    if method == "advisor":
                        checkpoint, loss, picked = run_advisor(plan, spec, folder, data, settings)
                    else:
                        checkpoint, loss, picked = run_study(plan.model_copy(update={"sampler": method}), spec, folder, data, settings)
                    wall = time.monotonic() - started
                    outcome = Outcome(name, seed, method, test_accuracy(checkpoint, test), loss, round(wall, 1), picked)
                    outcomes.append(outcome)
                    print(f"{name} seed {seed} {method}: test acc {100 * outcome.test_accuracy:.1f}%, val loss {loss:.4f}, {wall:.0f} s", flush=True)
    print_table(outcomes)


def print_table(outcomes: list[Outcome]) -> None:
    figures: dict[str, object] = {"outcomes": [asdict(outcome) for outcome in outcomes], "summary": {}}
    print(f"\n{'model':44} {'method':8} {'test acc mean ± sd':>20} {'vs advisor':>11} {'wall s':>8}")
    for name in dict.fromkeys(outcome.model for outcome in outcomes):
        advisor = [o.test_accuracy for o in outcomes if o.model == name and o.method == "advisor"]
        for method in METHODS:
            rows = [o for o in outcomes if o.model == name and o.method == method]
            accuracies = [o.test_accuracy for o in rows]
            mean, spread = statistics.fmean(accuracies), statistics.pstdev(accuracies)
            ratio = mean / statistics.fmean(advisor) if advisor and statistics.fmean(advisor) > 0 else float("nan")
            wall = statistics.fmean(o.wall_time_s for o in rows)
            print(f"{name:44} {method:8} {100 * mean:>13.1f}% ± {100 * spread:4.1f} {ratio:>10.2f}x {wall:>8.0f}")
            figures["summary"][f"{name} / {method}"] = {  # type: ignore[index]
                "test_accuracy_mean": round(mean, 4), "test_accuracy_sd": round(spread, 4),
                "accuracy_vs_advisor": round(ratio, 3), "wall_time_s_mean": round(wall, 1), "seeds": len(rows),
            }  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
