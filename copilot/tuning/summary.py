"""A study's outcome in words and one chart: the trials table, the round's note, the progress plot.

One place for how a tune reads, so the terminal, the commit and the git note agree. The
chart is plotext's text (best-so-far validation loss per trial, each complete trial's own
value beside it), built only when asked for; plotext is imported then. No I/O.
"""

from __future__ import annotations

from copilot.numbers import percent, significant
from copilot.tuning.study import TunedTrial, TunePlan, TuneResult, describe

ROLE_LABELS = {"current": "current values", "advisor": "advisor's guess", "sampler": ""}
TRIAL_COLUMNS = ("trial", "who", "state", "val loss", "val acc", "time", "values")


def trial_row(trial: TunedTrial, plan: TunePlan) -> tuple[str, ...]:
    """One trial as the table's columns (`TRIAL_COLUMNS`)."""
    loss = significant(trial.val_loss) if trial.val_loss is not None else "-"
    accuracy = percent(trial.val_accuracy, missing="-")
    state = trial.state if trial.state != "failed" or not trial.message else f"failed: {trial.message}"
    values = describe(trial.hparams, plan.start)
    return (f"t{trial.number}", ROLE_LABELS[trial.role] or plan.sampler, state, loss, accuracy, f"{trial.wall_time_s:.1f} s", values)


def trial_line(trial: TunedTrial, plan: TunePlan) -> str:
    """`t3 tpe: pruned, val loss 1.204, val acc 41.0%, 3.2 s: lr 0.5 -> 0.01`: one trial as it finishes."""
    number, who, state, loss, accuracy, time, values = trial_row(trial, plan)
    return f"{number} {who}: {state}, val loss {loss}, val acc {accuracy}, {time}: {values}"


def table_lines(result: TuneResult) -> list[str]:
    """Every trial in one line, best marked: what the commit and the note hold."""
    best = result.best
    return [
        trial_line(trial, result.plan) + (" (best)" if best is not None and trial.number == best.number else "") for trial in result.trials
    ]


def verdict_line(result: TuneResult) -> str:
    """`best: t7 val loss 0.4123 vs current 1.2093 (…ranking…)`: the study's answer in one line."""
    best, current = result.best, result.of_role("current")
    if best is None:
        return f"no trial finished: {result.reason}"
    base = f" vs current {significant(current.val_loss)}" if current is not None and current.val_loss is not None else ""
    return f"best: t{best.number} val loss {significant(best.val_loss)}{base}; {result.reason}"


def tune_note(result: TuneResult) -> dict[str, object]:
    """The round note's `tune` part (`copilot.history.rounds.TuneResults`)."""
    best = result.best
    assert best is not None and best.val_loss is not None, "only a study with a best trial becomes a round"
    current, advisor = result.of_role("current"), result.of_role("advisor")
    return {
        "study": result.study,
        "sampler": result.plan.sampler,
        "trials": len(result.trials),
        "pruned": sum(trial.state == "pruned" for trial in result.trials),
        "samples_per_trial": result.plan.samples,
        "best_trial": best.number,
        "best_val_loss": best.val_loss,
        "current_val_loss": current.val_loss if current is not None else None,
        "advisor_val_loss": advisor.val_loss if advisor is not None else None,
        "changes": describe(best.hparams, result.plan.start),
        "wall_time_s": result.wall_time_s,
        "table": table_lines(result),
    }


def progress_chart(result: TuneResult, width: int = 72, height: int = 16) -> str:
    """plotext's text of the study's progress: each complete trial's loss and the best so far."""
    import plotext as plt

    finished = [trial for trial in result.trials if trial.state == "complete" and trial.val_loss is not None]
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")  # plain text: the chart goes to pipes and logs too
    plt.title(f"{result.study}: validation loss per trial ({result.plan.sampler})")
    plt.xlabel("trial")
    if finished:
        numbers = [trial.number for trial in finished]
        losses = [trial.val_loss for trial in finished]
        best_so_far = [min(losses[: index + 1]) for index in range(len(losses))]  # type: ignore[type-var]
        plt.scatter(numbers, losses, label="trial", marker="dot")
        plt.plot(numbers, best_so_far, label="best so far")
    return plt.build()
