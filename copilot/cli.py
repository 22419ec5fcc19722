"""The `copilot` command line: parse, call one function, print the result.

Each subcommand lives in a module of `copilot.commands` that exposes
`register(subparsers)`; registering must stay cheap (no torch, no Textual), so the
modules import their heavy parts inside the handler. Here we only turn errors into
what the user sees: `error:` and `hint:` lines and exit 2 for problems they can fix,
one line and exit 1 for our own bugs, with the traceback in a log file.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from copilot import __version__
from copilot.errors import CopilotError, DiskFullError, error_summary, is_disk_full

COMMAND_MODULES = (
    "copilot.commands.train",
    "copilot.commands.diagnose",
    "copilot.commands.history",
    "copilot.commands.session",
    "copilot.commands.tune",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="copilot",
        description="A terminal co-pilot for training neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"copilot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _write_crash_log(exc: BaseException) -> Path:
    """Keep the traceback for the bug report; the screen gets one line."""
    text = "".join(traceback.format_exception(exc))
    for folder in (Path.cwd() / ".copilot" / "logs", Path(tempfile.gettempdir()) / "copilot-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("(unwritable)")


def _written_folder(exc: BaseException) -> Path:
    """The folder a failed write was for (sqlite does not say: then the working folder)."""
    filename = getattr(exc, "filename", None)
    return Path(filename).resolve().parent if isinstance(filename, str) else Path.cwd()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        try:
            return int(args.handler(args) or 0)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # The app's own writes (ledger, advisor.sqlite, report) on a full disk: the user's to fix.
            raise DiskFullError(_written_folder(exc), f"copilot resume {getattr(args, 'run', None) or 'RUN'}") from exc
    except CopilotError as exc:
        stderr.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            stderr.print(f"[bold]hint:[/] {escape(exc.hint)}")
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    except Exception as exc:  # our bug: one line on screen, the rest in a file
        log = _write_crash_log(exc)
        stderr.print(f"[bold red]error:[/] internal error: {escape(error_summary(exc))}")
        stderr.print(f"[bold]hint:[/] the traceback is in {escape(str(log))}; please report it")
        return 1


if __name__ == "__main__":
    sys.exit(main())
