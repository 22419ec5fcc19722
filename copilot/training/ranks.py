"""Several trainer processes: torch.distributed's elastic agent as the trainer, and the channel to rank 0.

When `TrainSettings.launch` asks for more than one process on one machine, `TrainerProcess`
starts `python -m torch.distributed.run` (torchrun's own agent, with torchrun's options and
meaning) instead of one worker; the agent starts the ranks (`rank_entry.py`), restarts them
under `--max-restarts` and ends them all when one dies. This module holds what the parent
needs for that, and the agent's own entry:

- The start file (`RankStart`, at `RunFolder.rank_start`): the spec and how to reach the
  app, read by every rank on every node. The run folder must be on a filesystem every node
  sees (the usual cluster case); a rank that cannot read it refuses in one line.
- The channel: torchrun's workers inherit none of our file descriptors, and an
  `mp.Queue` does not cross the launcher, so the app listens on an abstract unix socket
  (`AppSocket`, a random name, no file to clean up, no path-length limit) and rank 0
  connects to it with an HMAC challenge on a key that only the start file holds. Rank 0
  must therefore run on the app's machine: node rank 0. After a restart the new rank 0
  connects again and the app carries on with it. The other ranks never talk to the app.
- The failure: the agent writes the first failed rank and its cause as one `TrainerError`
  to `RunFolder.rank_failure`, which the parent reports when the job ends without finishing.

Ranks are not walled yet: the walls give each process a network namespace of its own, so
gloo and NCCL traffic between ranks would need walls of their own kind. A walled spec with
several processes is refused before anything starts.

It must not import torch at module level (the app imports it through the launcher).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from copilot.config import LaunchSettings
from copilot.errors import ConfigError, first_line
from copilot.events import TrainerError
from copilot.run_folder import RunFolder

RANK_ENTRY_MODULE = "copilot.training.rank_entry"
# The agent's side: its arguments are the failure file, then torchrun's own.
AGENT_CODE = "import sys; from copilot.training.ranks import agent_main; agent_main(sys.argv[1], sys.argv[2:])"
# How often the app's accept loop looks whether the socket was closed.
ACCEPT_POLL_S = 0.5


class RankStart(BaseModel):
    """What every rank reads first: the trainer spec (as JSON) and how rank 0 reaches the app."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: str
    app_address: str  # an abstract unix socket name, without its leading NUL
    authkey: str  # hex


def read_rank_start(run_folder: Path) -> RankStart:
    """The start file, or one line saying that this node cannot see the run folder."""
    path = RunFolder(run_folder).rank_start
    try:
        return RankStart.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{socket.gethostname()} cannot see the run folder {run_folder} (no {path.name} there)",
            "put the run folder on a filesystem every node mounts at the same path",
        ) from None


def agent_arguments(launch: LaunchSettings, folder: RunFolder) -> list[str]:
    """torchrun's command line for `launch`, running `rank_entry` on the run folder; the ranks'
    output goes to files under the trainer's folder, never into the app's terminal."""
    arguments = [
        f"--nproc-per-node={launch.nproc_per_node}",
        f"--nnodes={launch.nnodes}",
        f"--node-rank={launch.node_rank}",
        f"--rdzv-backend={launch.rdzv_backend}",
        f"--max-restarts={launch.max_restarts}",
        f"--log-dir={folder.ranks_logs}",
        "--redirects=3",
    ]
    if launch.rdzv_endpoint:
        arguments.append(f"--rdzv-endpoint={launch.rdzv_endpoint}")
    return [*arguments, "-m", RANK_ENTRY_MODULE, str(folder.path)]


def second_node_command(launch: LaunchSettings, folder: RunFolder) -> str:
    """What another machine runs to join (plain torchrun: nothing of the app runs there)."""
    return (
        f"python -m torch.distributed.run --nproc-per-node={launch.nproc_per_node} --nnodes={launch.nnodes} "
        f"--node-rank=N --rdzv-backend={launch.rdzv_backend} --rdzv-endpoint={launch.rdzv_endpoint or 'HOST:PORT'} "
        f"-m {RANK_ENTRY_MODULE} {folder.path}"
    )


def refuse_walls(walled: bool) -> None:
    if walled:
        raise ConfigError(
            "code copilot did not get from you cannot run on several processes yet (the walls keep ranks apart)",
            "run it with --nproc-per-node 1, or accept only hyperparameter changes in this run",
        )


class AppSocket:
    """The app's end of the channel to rank 0: an abstract unix socket that takes authenticated connections."""

    def __init__(self) -> None:
        self.address = f"copilot-{secrets.token_hex(12)}"
        self.authkey = secrets.token_bytes(32)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind("\0" + self.address)
        self._socket.listen()
        self._socket.settimeout(ACCEPT_POLL_S)
        self._closed = threading.Event()

    def start_file(self, spec_json: str) -> RankStart:
        return RankStart(spec=spec_json, app_address=self.address, authkey=self.authkey.hex())

    def accept_each(self, on_connection: Callable[[Connection], None]) -> None:
        """Hand every authenticated connection (rank 0, then rank 0 after each restart) to `on_connection`, on a thread."""
        threading.Thread(target=self._accept_loop, args=(on_connection,), name="copilot-rank0-accept", daemon=True).start()

    def _accept_loop(self, on_connection: Callable[[Connection], None]) -> None:
        while not self._closed.is_set():
            try:
                accepted, _address = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            accepted.settimeout(None)
            connection = Connection(accepted.detach())
            try:
                deliver_challenge(connection, self.authkey)
                answer_challenge(connection, self.authkey)
            except (AuthenticationError, EOFError, OSError):
                connection.close()  # not our rank 0
                continue
            on_connection(connection)

    def close(self) -> None:
        self._closed.set()
        self._socket.close()


def connect_to_app(start: RankStart) -> Connection:
    """Rank 0's side: connect and authenticate, or say in one line that rank 0 is not on the app's machine."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect("\0" + start.app_address)
    except OSError:
        client.close()
        raise ConfigError(
            f"rank 0 runs on {socket.gethostname()}, which is not the machine copilot runs on",
            "give the app's machine --node-rank 0 (with c10d, start the app's node first)",
        ) from None
    connection = Connection(client.detach())
    authkey = bytes.fromhex(start.authkey)
    answer_challenge(connection, authkey)
    deliver_challenge(connection, authkey)
    return connection


def read_failure(folder: RunFolder) -> TrainerError | None:
    """The agent's account of the failed rank, when it wrote one."""
    try:
        return TrainerError.model_validate_json(folder.rank_failure.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def agent_main(failure_file: str, torchrun_arguments: list[str]) -> None:
    """The agent process: run torchrun's agent; when the job fails, write the first failed rank and why."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    # "auto" is every visible GPU, and one process on a machine with none (torchrun's own
    # "auto" would start one per CPU core).
    resolved = [f"--nproc-per-node={torch.cuda.device_count() or 1}" if a == "--nproc-per-node=auto" else a for a in torchrun_arguments]
    arguments = parse_args(resolved)
    resume_hint = f"continue every rank from the last checkpoint with `copilot resume {Path(arguments.training_script_args[-1]).name}`"
    try:
        run(arguments)
    except ChildFailedError as failure:
        rank, process = failure.get_first_failure()
        if process.exitcode < 0:
            cause, kind = f"killed by {process.signal_name()}", "killed"
        else:
            message = process.message.get("message", "") if isinstance(process.message, dict) else ""
            cause, kind = (first_line(message) or f"exit code {process.exitcode}"), "runtime"
        _write_failure(
            failure_file,
            TrainerError(
                kind=kind,  # type: ignore[arg-type]
                message=f"rank {rank} failed ({cause}); the elastic agent ended every rank",
                hint=resume_hint,
                user_error=False,
            ),
        )
        sys.exit(1)
    except RendezvousError as error:
        endpoint = arguments.rdzv_endpoint or "this machine"
        _write_failure(
            failure_file,
            TrainerError(
                kind="config",
                message=f"the nodes did not all meet at the rendezvous {endpoint}: {type(error).__name__}",
                hint="start every node with the same --nnodes and --rdzv-endpoint, and check that they reach it",
            ),
        )
        sys.exit(1)


def _write_failure(path: str, error: TrainerError) -> None:
    with contextlib.suppress(OSError):  # the agent's exit status still says it failed
        Path(path).write_text(error.model_dump_json() + "\n", encoding="utf-8")
