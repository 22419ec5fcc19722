"""Accept -> first training step of the new round: the issue's target is 2 s, excluding the model's own start-up.

A real session (trainer process, offline advisor, git history in a temporary
repository) trains the study's bad_cnn.py on part of the shapes set. When the
advisor's proposal waits, the clock starts at `Session.decide(accept)` (the ledger
line, the round commit and its note included) and stops when the trainer reports a
logged step after the swap (every step is logged here). The baseline, measured in
this process on the same machine, is the model's own start-up: importing the
proposed module, building it and one forward pass on the trainer's probe batch,
which any trainer must pay for a new model. Prints one line per accepted round and,
last, one JSON object.

    python benchmarks/accept_latency.py [--rounds 2] [--train-size 2048]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0


def model_startup_s(code: str, class_name: str, folder: Path) -> float:
    """Import the module, build the model and run the trainer's 2-sample probe: the model's own cost."""
    import torch

    path = folder / f"startup_{time.monotonic_ns()}.py"
    path.write_text(code, encoding="utf-8")
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, class_name)()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    return time.perf_counter() - started


def wait_for(session, condition, timeout: float = 300.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in session.poll_events(0.01):
            found = condition(event)
            if found is not None:
                return found
    raise SystemExit("timed out waiting for the trainer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="accepted proposals to measure")
    parser.add_argument("--train-size", type=int, default=2048)
    args = parser.parse_args()

    from copilot.advisor.schemas import ArchitectureProposal, Verdict
    from copilot.commands.session import prepare_demo_folder
    from copilot.config import Settings
    from copilot.events import ModelSwapped, HParamsApplied, StepBatch
    from copilot.session.controller import Session

    results = []
    with tempfile.TemporaryDirectory(prefix="copilot-accept-") as scratch:
        folder = Path(scratch)
        model = prepare_demo_folder(folder / "project")
        settings = Settings(
            runs_dir=folder / "project" / ".copilot" / "runs",
            data={"train_size": args.train_size, "val_size": 256},
            train={"device": "cpu", "log_every": 1, "hparams": {"epochs": 1000}},
            advisor={"assess_every": 1},
        )
        session = Session.start(settings, str(model))
        try:
            while len(results) < args.rounds:
                trigger = wait_for(session, lambda _event: session.due_assessment())
                turn = session.assess(trigger)
                proposal = turn.proposal
                if proposal.kind == "finish":
                    session.decide(Verdict(decision="reject", reason="measuring"))
                    continue
                started = time.perf_counter()
                decision = session.decide(Verdict(decision="accept"))
                decided = time.perf_counter() - started
                applied = wait_for(session, lambda e: e if isinstance(e, (ModelSwapped, HParamsApplied)) else None)
                wait_for(
                    session,
                    lambda e: e if isinstance(e, StepBatch) and any(r.step > applied.step for r in e.records) else None,
                )
                total = time.perf_counter() - started
                startup = (
                    model_startup_s(proposal.code, proposal.class_name, folder)
                    if isinstance(proposal, ArchitectureProposal)
                    else 0.0
                )
                results.append(
                    {"kind": proposal.kind, "round": decision.round.round, "decide_s": decided, "total_s": total, "model_startup_s": startup}
                )
                print(
                    f"r{decision.round.round} {proposal.kind}: decide (ledger, commit, note, command) {decided:.3f} s; "
                    f"accept -> first new step {total:.3f} s; model start-up {startup:.3f} s; "
                    f"excluding it {total - startup:.3f} s (target {TARGET_S:g} s)"
                )
        finally:
            session.stop()
    excluding = [item["total_s"] - item["model_startup_s"] for item in results]
    summary = {
        "rounds": results,
        "median_accept_to_first_step_s": statistics.median(item["total_s"] for item in results),
        "max_excluding_model_startup_s": max(excluding),
        "target_s": TARGET_S,
        "met": max(excluding) <= TARGET_S,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
