"""How fast the experiment history is: a round commit with its note, and `copilot log` over 200 rounds.

Builds a throw-away repository in a temporary folder (a model among 60 other files, so
git has a real tree to read), starts a run and commits 200 rounds, alternating
architecture and hyperparameter changes, each followed by its result note. Measures:

  round_with_note   commit_round + record_result, per round (budget: 150 ms)
  rounds()          reading all rounds with their notes from git
  copilot log       the `log` command in this process: open the run, read, render the table
                    (budget: 1 s); and once more as a fresh `python -m copilot log` process
  undo + redo       taking the last round off and putting it back

Git runs with a configuration of its own (an identity, nothing else), so the numbers do
not depend on the machine's hooks or settings. The machine is shared and its load
swings, so after every round one trivial git process (`git rev-parse HEAD` through
GitPython) is timed as a baseline, and the round is also given in those units. Prints
readable lines, then as the last line one JSON object with the medians.

    python benchmarks/history_speed.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import git.cmd

from copilot import cli
from copilot.history import ExperimentHistory

RUN = "20261120-234500-net-3f2a"
MODEL = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, {width}), nn.ReLU(), nn.Linear({width}, classes))

    def forward(self, x):
        return self.body(x)
"""


class GitCallCounter:
    """Counts git processes by wrapping GitPython's one entry point for running git."""

    def __init__(self) -> None:
        self.calls = 0
        self._execute = git.cmd.Git.execute

    def __enter__(self) -> "GitCallCounter":
        original = self._execute

        def counted(instance: git.cmd.Git, *args: object, **kwargs: object) -> object:
            self.calls += 1
            return original(instance, *args, **kwargs)

        git.cmd.Git.execute = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        git.cmd.Git.execute = self._execute  # type: ignore[method-assign]


def isolated_git(home: Path) -> None:
    config = home / ".gitconfig"
    config.write_text("[user]\n\tname = Bench Mark\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
    os.environ.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")


def make_project(folder: Path) -> Path:
    folder.mkdir()
    for package in range(6):
        (folder / f"pkg{package}").mkdir()
        for module in range(10):
            (folder / f"pkg{package}" / f"mod{module}.py").write_text(f"VALUE = {package * 10 + module}\n")
    (folder / "models").mkdir()
    (folder / "models" / "net.py").write_text(MODEL.format(width=16))
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "project"]):
        subprocess.run(["git", *command], cwd=folder, check=True)
    return folder


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def trivial_git(project: Path) -> None:
    with git.Repo(project) as repo:
        repo.git.execute(["git", "rev-parse", "HEAD"])


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="copilot-history-bench-") as scratch:
        isolated_git(Path(scratch))
        project = make_project(Path(scratch) / "project")
        history = ExperimentHistory.start(project / "models" / "net.py", RUN, hparams={"optimizer": "SGD", "lr": 0.1})

        commit_times, note_times, baseline_times = [], [], []
        with GitCallCounter() as counter:
            for step in range(1, options.rounds + 1):
                architecture = step % 2 == 1
                started = time.perf_counter()
                info = history.commit_round(
                    kind="arch" if architecture else "hparams",
                    summary=f"{'widen the hidden layer' if architecture else 'lower the learning rate'} ({step})",
                    findings=["validation accuracy flat for 3 epochs", "gradient norms shrink toward the input"],
                    rationale="More capacity where the gradients still flow.",
                    model_code=MODEL.format(width=16 + step) if architecture else None,
                    hparams=None if architecture else {"optimizer": "Adam", "lr": 0.1 / step, "grad_clip": None},
                    advisor="offline",
                    before={"val_accuracy": 0.1 + step / 1000, "val_loss": 2.3 - step / 1000, "epoch": step},
                    verdict="accepted",
                )
                committed = time.perf_counter()
                history.record_result(info.round, {"val_accuracy": 0.1 + step / 900, "epochs_trained": 2, "training_s": 30.0})
                commit_times.append(committed - started)
                note_times.append(time.perf_counter() - committed)
                baseline_times.append(timed(lambda: trivial_git(project)))
        per_round = [commit + note for commit, note in zip(commit_times, note_times)]
        calls_per_round = (counter.calls - len(baseline_times)) / options.rounds

        rounds_times = [timed(history.rounds) for _ in range(15)]
        assert len(history.rounds()) == options.rounds + 1

        def log_command() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli.main(["log", "--repo", str(project)]) == 0

        log_times = [timed(log_command) for _ in range(10)]
        cold_times = [
            timed(
                lambda: subprocess.run(
                    [sys.executable, "-m", "copilot", "log", "--repo", str(project)], check=True, capture_output=True
                )
            )
            for _ in range(3)
        ]
        undo_redo_times = [timed(lambda: (history.undo(), history.redo())) for _ in range(5)]

    figures = {
        "rounds": options.rounds,
        "commit_round_ms_median": median_ms(commit_times),
        "record_result_ms_median": median_ms(note_times),
        "round_with_note_ms_median": median_ms(per_round),
        "round_with_note_ms_p90": round(sorted(per_round)[int(0.9 * len(per_round))] * 1000, 2),
        "git_processes_per_round_with_note": round(calls_per_round, 2),
        "trivial_git_process_ms_median": median_ms(baseline_times),
        "round_with_note_in_trivial_git_processes": round(statistics.median(per_round) / statistics.median(baseline_times), 1),
        f"rounds_{options.rounds}_s_median": round(statistics.median(rounds_times), 4),
        f"log_{options.rounds}_rounds_s": round(statistics.median(log_times), 4),
        f"log_{options.rounds}_rounds_cold_process_s": round(statistics.median(cold_times), 3),
        "undo_plus_redo_ms_median": median_ms(undo_redo_times),
    }
    print(f"round commit + note: median {figures['round_with_note_ms_median']} ms, p90 {figures['round_with_note_ms_p90']} ms (budget 150 ms)")
    print(f"  commit_round {figures['commit_round_ms_median']} ms, record_result {figures['record_result_ms_median']} ms, "
          f"{figures['git_processes_per_round_with_note']} git processes per round")
    print(f"  a trivial git process takes {figures['trivial_git_process_ms_median']} ms here now: a round with its note "
          f"costs {figures['round_with_note_in_trivial_git_processes']} of them")
    print(f"rounds() over {options.rounds + 1} rounds: median {figures[f'rounds_{options.rounds}_s_median']} s")
    print(f"copilot log: median {figures[f'log_{options.rounds}_rounds_s']} s in process (budget 1 s), "
          f"{figures[f'log_{options.rounds}_rounds_cold_process_s']} s as a fresh process")
    print(f"undo + redo: median {figures['undo_plus_redo_ms_median']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
