"""The hostile battery's battlefield: fake credentials, listeners and files, and one run per mode.

Each mode gets its own temporary machine-in-miniature: a fake HOME holding
`~/.aws/credentials`, credentials in the environment, a git repository holding the
hostile model, a run folder with a ledger, a TCP and a UDP listener on 127.0.0.1 and a
unix socket at a path. "walled" runs the model in a walled `TrainerProcess`;
"unwalled" is the positive control, the same model in a trainer without walls and with
the whole environment (as every trainer ran before), proving each payload runs and
reaches its canary when nothing stops it. Both runs happen once per module.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from copilot.config import DataSettings, TrainSettings
from copilot.events import Event, ModelRef, StepBatch
from copilot.run_folder import RunFolder
from copilot.training.launcher import TrainerProcess, TrainerSpec
from tests.security.hostile import FORGED_LEDGER_LINE, HOSTILE_MODEL, SECRET

CONTROL_SCRIPT = Path(__file__).with_name("unwalled_trainer.py")
WAIT_S = 180.0
ORIGINAL_LEDGER = '{"proposal": "kept"}\n'


@dataclass
class Battlefield:
    """One mode's canaries, and what reached them."""

    root: Path
    repo: Path
    run: RunFolder
    credentials: Path
    outside: Path
    hook: Path
    tcp: socket.socket = field(init=False)
    udp: socket.socket = field(init=False)
    unix: socket.socket = field(init=False)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(self.root / "listener.sock"))
        self.unix.listen()

    def targets(self) -> str:
        return json.dumps(
            {
                "tcp_port": self.tcp.getsockname()[1],
                "udp_port": self.udp.getsockname()[1],
                "unix_path": self.unix.getsockname(),
                "credentials": str(self.credentials),
                "outside": str(self.outside),
                "hook": str(self.hook),
                "ledger": str(self.run.ledger),
                "forged_line": FORGED_LEDGER_LINE,
                "loot_dir": str(self.run.trainer),
            }
        )

    def loot(self, trigger: str) -> dict[str, str]:
        return json.loads((self.run.trainer / f"loot-{trigger}.json").read_text(encoding="utf-8"))

    def network_reached(self) -> dict[str, bool]:
        """Whether anything arrived. Asked after the trainer exited: a connection or datagram sent is queued by then."""
        return {"tcp": _readable(self.tcp), "udp": _readable(self.udp), "unix_socket": _readable(self.unix)}

    def close(self) -> None:
        for listener in (self.tcp, self.udp, self.unix):
            listener.close()


def _readable(listener: socket.socket) -> bool:
    return bool(select.select([listener], [], [], 0)[0])


def make_field(root: Path) -> Battlefield:
    root.mkdir(parents=True)
    home = root / "home"
    (home / ".aws").mkdir(parents=True)
    credentials = home / ".aws" / "credentials"
    credentials.write_text(f"[default]\naws_secret_access_key = {SECRET}\n", encoding="utf-8")
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "hostile.py").write_text(HOSTILE_MODEL, encoding="utf-8")
    run = RunFolder(repo / ".copilot" / "runs" / "run-1").create()
    run.ledger.write_text(ORIGINAL_LEDGER, encoding="utf-8")
    return Battlefield(root, repo, run, credentials, root / "outside.txt", repo / ".git" / "hooks" / "post-commit")


def hostile_spec(battlefield: Battlefield, *, walled: bool, epochs: int) -> TrainerSpec:
    return TrainerSpec(
        run_folder=battlefield.run.path,
        model=ModelRef(path=battlefield.repo / "hostile.py", name="Hostile", args={"targets": battlefield.targets()}),
        data=DataSettings(train_size=48, val_size=16),
        train=TrainSettings.model_validate({"device": "cpu", "log_every": 1, "hparams": {"epochs": epochs}}),
        walled=walled,
    )


def run_walled(battlefield: Battlefield) -> None:
    """Train until the forward trigger fired, deliver SIGINT from outside, wait for its loot, stop (atexit fires)."""
    trainer = TrainerProcess(hostile_spec(battlefield, walled=True, epochs=1000))
    trainer.start()
    sigint_loot = battlefield.run.trainer / "loot-sigint.json"
    sent_sigint = False
    deadline = time.monotonic() + WAIT_S
    try:
        while not sigint_loot.exists():
            assert time.monotonic() < deadline, f"the walled trainer never reached its SIGINT trigger: {battlefield.events}"
            assert trainer.is_alive or trainer.poll(), f"the walled trainer died: {battlefield.events}"
            battlefield.events.extend(trainer.poll(timeout=0.2))
            if not sent_sigint and any(isinstance(event, StepBatch) for event in battlefield.events):
                assert trainer.pid is not None
                os.kill(trainer.pid, signal.SIGINT)
                sent_sigint = True
    finally:
        battlefield.events.extend(trainer.stop(timeout=60))


def run_control(battlefield: Battlefield) -> None:
    spec_file = battlefield.root / "spec.json"
    spec_file.write_text(hostile_spec(battlefield, walled=False, epochs=1).model_dump_json(), encoding="utf-8")
    subprocess.run([sys.executable, str(CONTROL_SCRIPT), str(spec_file)], check=True, timeout=WAIT_S, env=dict(os.environ))


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Battlefield]]:
    """{"walled": ..., "unwalled": ...}, each after its run."""
    base = tmp_path_factory.mktemp("battlefield")
    made = {mode: make_field(base / mode) for mode in ("walled", "unwalled")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        patch.setenv("OPENAI_API_KEY", SECRET)
        for mode, battlefield in made.items():
            patch.setenv("HOME", str(battlefield.root / "home"))
            (run_walled if mode == "walled" else run_control)(battlefield)
    yield made
    for battlefield in made.values():
        battlefield.close()
