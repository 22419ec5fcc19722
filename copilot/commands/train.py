"""`copilot train`: train a model headless, with a progress bar and a table per epoch.

Parses the flags into the same nested shape as copilot.toml, builds a `TrainerSpec`,
writes it as the run's session.json (so `--resume` can start the run again), runs the
trainer process and shows what it reports. Exit codes: 0 when training finished or was
stopped, 2 for a problem the user can fix, 1 for our own failure.

It must not import torch (the trainer does, in its own process) nor train anything here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from copilot.config import Settings, load_settings
from copilot.console.progress import TrainingProgress
from copilot.errors import ConfigError, CopilotError
from copilot.events import Finished, ModelArg, Stop, TrainerError
from copilot.run_folder import RunFolder, find_run, new_run_id
from copilot.training.launcher import TrainerProcess, TrainerSpec, model_from_command_line
from copilot.training.ranks import second_node_command

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
POLL_S = 0.2
STOP_TIMEOUT_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model without the app, printing progress",
        description="Train MODEL.py (or MODEL.py:Name) headless and print a table per epoch.",
    )
    add_training_options(parser)
    parser.add_argument("--resume", metavar="RUN", help="continue a run (id, id prefix or folder) from its latest checkpoint")
    parser.set_defaults(handler=run_train_command)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The model, data and training flags; `copilot run` takes them too (see `training_overrides`)."""
    parser.add_argument("model", nargs="?", metavar="MODEL[:Name]", help="the model file, optionally :ClassOrFactory")
    parser.add_argument("--dataset", help="shapes (default), text, cifar10, imagefolder or custom")
    parser.add_argument("--data-dir", type=Path, help="folder of cifar10 batches or of images")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="samples per step in all (global: split evenly across the ranks)")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--optimizer", help="SGD, Adam, AdamW or RMSprop")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--run-name", help="name of the run folder (default: time and model name)")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument of the model; repeat for several",
    )
    parser.add_argument("--log-every", type=int, help="steps between measured steps")
    add_launch_options(parser)


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """torchrun's own options, with torchrun's meaning; any of them starts the ranks through its elastic agent."""
    group = parser.add_argument_group("several processes (torch.distributed)")
    group.add_argument(
        "--nproc-per-node",
        metavar="N|auto",
        help="ranks on this machine; auto: every visible GPU, one process on a machine without one. "
        "The batch size stays global (split across the ranks) and the learning rate keeps its meaning",
    )
    group.add_argument("--nnodes", metavar="N|MIN:MAX", help="machines in the job (torchrun's --nnodes)")
    group.add_argument("--node-rank", type=int, help="this machine's place among them; the app's machine is 0")
    group.add_argument("--rdzv-backend", help="static (default) or c10d")
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="where the machines meet")
    group.add_argument("--max-restarts", type=int, help="restarts of every rank from the last checkpoint before the job fails")


def _launch_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "nproc_per_node": args.nproc_per_node,
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
        "rdzv_backend": args.rdzv_backend,
        "rdzv_endpoint": args.rdzv_endpoint,
        "max_restarts": args.max_restarts,
    }
    return {key: value for key, value in given.items() if value is not None}


def run_train_command(args: argparse.Namespace) -> int:
    if args.resume:
        if args.model:
            raise ConfigError("give either MODEL or --resume RUN, not both", "a resumed run keeps its own model")
        spec = _resumed_spec(args)
    elif args.model:
        spec = _new_spec(args, load_settings(training_overrides(args)))
    else:
        raise ConfigError("no model given", "run `copilot train MODEL.py`, or `copilot train --resume RUN`")
    return run_headless(spec, Console(highlight=False))


# --------------------------------------------------------------------------- flags -> spec


def _hparam_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer}
    return {key: value for key, value in given.items() if value is not None}


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of `add_training_options` that were given, nested like copilot.toml, for `load_settings`."""
    sections: dict[str, dict[str, Any]] = {
        "data": {"dataset": args.dataset, "data_dir": args.data_dir},
        "train": {
            "device": args.device,
            "log_every": args.log_every,
            "hparams": _hparam_flags(args) or None,
            "launch": _launch_flags(args) or None,
        },
        "model": {"args": _parse_model_args(args.model_arg) or None},
    }
    return {
        section: {key: value for key, value in values.items() if value is not None}
        for section, values in sections.items()
        if any(value is not None for value in values.values())
    }


def _parse_model_args(pairs: list[str]) -> dict[str, ModelArg]:
    parsed: dict[str, ModelArg] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        # One dot reaches a field of a config object: config.n_layer=4.
        if not equals or not all(part.isidentifier() for part in key.strip().split(".", 1)):
            raise ConfigError(
                f"--model-arg '{pair}' is not KEY=VALUE",
                "write it like --model-arg width=64, or --model-arg config.n_layer=4 for a config field",
            )
        parsed[key.strip()] = _parse_value(text.strip())
    return parsed


def _parse_value(text: str) -> ModelArg:
    """"64" -> 64, "0.5" -> 0.5, "true" -> True, "none" -> None, anything else stays text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def _new_spec(args: argparse.Namespace, settings: Settings) -> TrainerSpec:
    model = model_from_command_line(args.model, settings.model.args)
    if args.run_name is not None and not RUN_NAME.fullmatch(args.run_name):
        raise ConfigError(f"run name '{args.run_name}' is not a plain folder name", "use letters, digits, '.', '_' and '-'")
    folder = RunFolder((settings.runs_dir / (args.run_name or new_run_id(model.path))).resolve())
    if folder.path.exists():
        raise ConfigError(f"run folder {folder.path} already exists", "choose another --run-name, or continue it with --resume")
    folder.create()
    spec = TrainerSpec(
        run_folder=folder.path,
        model=model,
        data=settings.data,
        train=settings.train,
        max_params=settings.sandbox.max_params,
    )
    folder.session.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return spec


def _resumed_spec(args: argparse.Namespace) -> TrainerSpec:
    """The run's session, continued from its latest checkpoint with the flags given now on top.

    Only hyperparameters named on this command line override the checkpoint's: settings in
    copilot.toml were already applied when the run started, and changes the advisor made
    since live in the checkpoint.
    """
    if args.dataset or args.data_dir or args.model_arg:
        raise ConfigError("a resumed run keeps its data set and model arguments", "drop --dataset, --data-dir and --model-arg")
    settings = load_settings()
    by_name = settings.runs_dir / args.resume
    folder = RunFolder(by_name.resolve()) if (by_name / "session.json").exists() else find_run(args.resume, runs=settings.runs_dir)
    if not folder.session.exists():
        raise CopilotError(f"{folder.path} has no session.json", "only runs started by `copilot train` can be resumed")
    try:
        session = TrainerSpec.model_validate_json(folder.session.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise CopilotError(
            f"{folder.session} is damaged: {exc.errors()[0]['msg']}",
            "start the run again with `copilot train MODEL.py`",
        ) from None
    checkpoint = folder.latest_checkpoint()
    if checkpoint is None:
        raise CopilotError(f"run {folder.run_id} has no checkpoint yet", "start it again with `copilot train MODEL.py`")
    train_changes: dict[str, Any] = {"hparams": _hparam_flags(args)}
    if args.device:
        train_changes["device"] = args.device
    if args.log_every:
        train_changes["log_every"] = args.log_every
    if launch := _launch_flags(args):  # every rank restarts, on as many as asked now
        train_changes["launch"] = {**session.train.launch.model_dump(), **launch}
    return session.model_copy(
        update={
            "run_folder": folder.path,
            "resume_from": checkpoint,
            "train": session.train.model_validate({**session.train.model_dump(), **train_changes}),
        }
    )


# --------------------------------------------------------------------------- running and showing


def run_headless(spec: TrainerSpec, console: Console) -> int:
    """Run the trainer to the end, showing progress; raise `CopilotError` when it failed."""
    console.print(f"run [bold]{escape(spec.run_folder.name)}[/] in {escape(str(spec.run_folder))}")
    if spec.train.launch.nnodes != "1":
        console.print(f"start each other node with: {escape(second_node_command(spec.train.launch, RunFolder(spec.run_folder)))}")
    view = TrainingProgress(console)
    trainer = TrainerProcess(spec)
    trainer.start()
    error: TrainerError | None = None
    try:
        with Live(view.renderable, console=console, refresh_per_second=4, transient=False):
            while True:
                events = trainer.poll(timeout=POLL_S)
                for event in events:
                    if not isinstance(event, TrainerError):
                        view.show(event)
                        continue
                    # Shown once, as the error and hint lines when the run has ended.
                    error = error or event
                    if event.kind == "nonfinite":  # headless: nobody is there to fix it, so end the run
                        trainer.send(Stop())
                if any(isinstance(e, Finished) for e in events) or (error is not None and error.kind in ("killed", "oom")):
                    break
    except KeyboardInterrupt:
        console.print("stopping: writing a checkpoint (Ctrl-C again to abandon it)")
        try:
            trainer.stop(STOP_TIMEOUT_S)
        except KeyboardInterrupt:
            trainer.kill()
        raise
    console.print()
    trainer.stop(STOP_TIMEOUT_S)
    if error is not None:
        failure = CopilotError(error.message, _hint_with_log(error, spec))
        failure.exit_code = 2 if error.user_error else 1
        raise failure
    return 0


def _hint_with_log(error: TrainerError, spec: TrainerSpec) -> str:
    log = RunFolder(spec.run_folder).events_log
    if error.kind == "disk":  # the trainer names the app's way to continue; this command has its own
        return error.hint.replace("copilot resume ", "copilot train --resume ")
    if not error.traceback:
        return error.hint
    return f"{error.hint} (details in {log})" if error.hint else f"details in {log}"
