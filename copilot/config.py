"""Settings: one pydantic-settings model, layered copilot.toml < env COPILOT_* < flags.

Every part reads its knobs from `Settings`; nothing else parses configuration. Nested
sections map to TOML tables (`[train]`, `[advisor.coder]`) and to environment
variables with a double underscore (`COPILOT_ADVISOR__ASSESS_EVERY=3`). Unknown keys
are errors, not silently ignored: a typo in copilot.toml must not change nothing.
It must not import torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from copilot.errors import ConfigError
from copilot.events import ModelArg

CONFIG_FILE = "copilot.toml"
ProviderName = Literal["offline", "bedrock", "openai"]
StructuredOutput = Literal["auto", "tools", "json_schema", "json_object", "prompt"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    # Constructor keyword arguments; "config.n_layer" is a field of the config object a constructor takes.
    args: dict[str, ModelArg] = Field(default_factory=dict)

    @field_validator("args", mode="before")
    @classmethod
    def _config_tables_as_dotted_keys(cls, args: Any) -> Any:
        """`config.n_layer = 4` or a `[model.args.config]` table in TOML is a nested table: flatten it
        to the "config.n_layer" key the command line gives, so there is one form past this point. The
        flags' dotted keys arrive merged beside the TOML's tables and go last, so a flag wins."""
        if not isinstance(args, dict):
            return args
        flat: dict[str, Any] = {}
        for key, value in args.items():
            if isinstance(value, dict):
                flat.update({f"{key}.{field}": field_value for field, field_value in value.items()})
        flat.update({key: value for key, value in args.items() if not isinstance(value, dict)})
        return flat


class DataSettings(Section):
    dataset: str = "shapes"  # shapes | text | cifar10 | imagefolder | custom
    data_dir: Path | None = None  # cifar10 batches or an image folder
    download: bool = False  # let torchvision download CIFAR-10 into data_dir
    custom: str | None = None  # "module.py:function" returning (train, val) datasets
    train_size: int | None = Field(None, ge=1)  # synthetic sets only; None = the set's default
    val_size: int | None = Field(None, ge=1)
    # The square side of the images: image folders are resized to it, the shapes set draws at it.
    image_size: int = Field(32, ge=8, le=512)
    # Colour channels the shapes set draws: 3 (colour, the default) or 1 (grayscale, as MNIST models expect).
    channels: int = Field(3, ge=1, le=4)
    seed: int = 0


class LaunchSettings(Section):
    """How many trainer processes on how many machines: torchrun's own options, with torchrun's meaning.

    One process on one machine (the default) is the plain trainer; anything more starts the
    ranks through torch.distributed's elastic agent (`copilot/training/ranks.py`).
    """

    # Ranks on this machine; "auto": every visible GPU, one process on a machine with none.
    nproc_per_node: int | Literal["auto"] = Field(1, union_mode="left_to_right")
    nnodes: str = "1"  # "N" or "MIN:MAX", as torchrun takes it
    node_rank: int = Field(0, ge=0)
    rdzv_backend: str = "static"
    rdzv_endpoint: str = ""  # HOST:PORT every node reaches
    max_restarts: int = Field(0, ge=0)  # the elastic agent restarts every rank from the last checkpoint

    @field_validator("nproc_per_node")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("nproc_per_node must be at least 1 or 'auto'")
        return value

    @property
    def single_process(self) -> bool:
        """One process on one machine: the plain trainer, without torchrun."""
        return self.nproc_per_node == 1 and self.nnodes == "1"


class TrainSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Left out of session.json while it is the default: a single process's session reads as it always did.
    launch: LaunchSettings = Field(default_factory=LaunchSettings, exclude_if=lambda launch: launch == LaunchSettings())
    hparams: dict[str, float | int | str | None] = Field(default_factory=dict)  # override HPARAMS
    log_every: int = Field(10, ge=1)  # steps between logged steps (all instruments)
    activation_every: int = Field(50, ge=1)  # steps between dead/saturated-unit samples
    max_messages_per_sec: float = Field(20.0, gt=0)
    seed: int = 0
    checkpoint_every_epoch: bool = True
    # Seconds one stage (the model's import, construction, first forward, a step) may take
    # before the trainer is called stuck and ends with the frame it is stuck in; None: never.
    watchdog_s: float | None = Field(300.0, gt=0)
    # Names of variables the trainer gets beyond the allow-list (copilot/walls.py), e.g. ["WANDB_API_KEY"].
    pass_env: list[str] = Field(default_factory=list)


class RoleSettings(Section):
    """Provider and model for one advisor role; None means the advisor-wide default."""

    provider: ProviderName | None = None
    model: str | None = None


class BedrockSettings(Section):
    region: str | None = None  # None: the standard AWS chain (AWS_REGION, profile)
    profile: str | None = None
    read_timeout_s: float = 600.0  # a timed-out generation is re-sent and billed again
    connect_timeout_s: float = 10.0
    max_attempts: int = Field(4, ge=1)
    thinking_budget_tokens: int = 0  # > 0: a separate free-text thinking call before the forced tool
    default_model: str = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    fast_model: str = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


class OpenAISettings(Section):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key, never the key
    default_model: str = "qwen2.5-coder"
    fast_model: str | None = None
    timeout_s: float = 600.0
    max_retries: int = Field(3, ge=0)
    # How to ask for schema-shaped JSON; "auto" tries each in turn and keeps the first the
    # server accepts (`copilot.advisor.llm.providers.openai_compat` says which servers take which).
    structured: StructuredOutput = "auto"
    # The most an answer may generate (sent as max_tokens): a small model can otherwise run on
    # to the end of its context. vLLM refuses a prompt plus this past the model's length; None
    # leaves it to the server.
    max_output_tokens: int | None = Field(4096, ge=1)
    # Sampling temperature sent with each request; 0 makes a model's answers repeatable (on
    # the same server and build), so a run can be repeated. None leaves it to the server.
    temperature: float | None = Field(None, ge=0.0, le=2.0)


class AdvisorSettings(Section):
    provider: ProviderName = "offline"
    assess_every: int = Field(2, ge=1)  # epochs between scheduled assessments
    plateau_window: int = Field(3, ge=2)  # epochs without improvement that trigger at once
    # Validation accuracy at which training is done (the advisor then proposes to finish); None: no target.
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)
    max_fix_rounds: int = Field(3, ge=0)
    # Training a model the human may be about to replace spends the epoch budget on it:
    # hold the trainer while a proposal waits at the gate, resume once it is decided.
    hold_training_while_waiting: bool = True
    # Hold it while the advisor assesses, too: the trainer waits at each epoch's end until the
    # session has decided whether the advisor looks. Then an advisor's latency (an LLM's minute)
    # never spends a short run's budget before its proposal can be trialled, and a change applies
    # at the epoch it was assessed at, so the same decisions repeat a run exactly. Headless with
    # --auto-accept, where nobody watches the run go on meanwhile, it is on.
    hold_training_while_assessing: bool = False
    assessor: RoleSettings = Field(default_factory=RoleSettings)
    coder: RoleSettings = Field(default_factory=RoleSettings)
    checker: RoleSettings = Field(default_factory=RoleSettings)
    reporter: RoleSettings = Field(default_factory=RoleSettings)
    bedrock: BedrockSettings = Field(default_factory=BedrockSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)


class SandboxSettings(Section):
    allowed_imports: list[str] = Field(
        default_factory=lambda: [
            "torch",
            "math",
            "typing",
            "dataclasses",
            "functools",
            "collections",
            "itertools",
            "__future__",
        ]
    )
    timeout_s: float = Field(60.0, gt=0)
    cpu_seconds: int = Field(60, ge=1)
    memory_mb: int = Field(4096, ge=256)
    max_params: int = Field(50_000_000, ge=1)


class TrialSettings(Section):
    """Short trials of each candidate change, forked from the run's checkpoint, before the human decides."""

    enabled: bool = True  # --no-trials: proposals go to the gate "not trialled"
    budget_fraction: float = Field(0.1, gt=0, le=1)  # of the run's remaining steps, then clamped:
    min_steps: int = Field(100, ge=1)
    max_steps: int = Field(1000, ge=1)
    evaluations: int = Field(4, ge=3)  # points at which each arm is scored; the noise needs three
    val_samples: int = Field(1024, ge=1)  # the first N validation samples every arm is scored on
    min_gain: float = Field(0.01, ge=0, lt=1)  # the least relative validation-loss gain that counts as one
    max_candidates: int = Field(3, ge=1)  # changes trialled beside the unchanged run
    arm_timeout_s: float = Field(1800.0, gt=0)  # one arm that takes longer is killed and counts as failed


SamplerName = Literal["tpe", "cmaes", "random"]


class TuneSettings(Section):
    """`copilot tune` and the app's tune key: how many trials, which Optuna sampler (flags override both)."""

    trials: int = Field(12, ge=1)  # more than TPE's ten random start-up trials
    sampler: SamplerName = "tpe"


class TuiSettings(Section):
    refresh_hz: float = Field(2.0, gt=0, le=30)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COPILOT_",
        env_nested_delimiter="__",
        toml_file=CONFIG_FILE,
        extra="forbid",
    )

    runs_dir: Path = Path(".copilot") / "runs"
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    advisor: AdvisorSettings = Field(default_factory=AdvisorSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    trials: TrialSettings = Field(default_factory=TrialSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    tui: TuiSettings = Field(default_factory=TuiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags (init) over environment over copilot.toml.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def role(self, role: Literal["assessor", "coder", "checker", "reporter"]) -> RoleSettings:
        """The provider and model for one advisor role, with the advisor-wide defaults filled in."""
        chosen: RoleSettings = getattr(self.advisor, role)
        provider = chosen.provider or self.advisor.provider
        if chosen.model:
            return RoleSettings(provider=provider, model=chosen.model)
        strong = role in ("assessor", "coder")
        if provider == "bedrock":
            model = self.advisor.bedrock.default_model if strong else self.advisor.bedrock.fast_model
        elif provider == "openai":
            openai = self.advisor.openai
            model = openai.default_model if strong else (openai.fast_model or openai.default_model)
        else:
            model = "rules"
        return RoleSettings(provider=provider, model=model)


def load_settings(overrides: dict[str, Any] | None = None, config_dir: Path | None = None) -> Settings:
    """Settings from copilot.toml (in `config_dir`, default the working folder), env and flags.

    `overrides` holds the flags, nested like the TOML (`{"train": {"device": "cpu"}}`);
    a problem anywhere becomes one `ConfigError` naming the key.
    """
    toml_path = (config_dir or Path.cwd()) / CONFIG_FILE
    try:

        class _Located(Settings):
            model_config = SettingsConfigDict(toml_file=toml_path)

        return _Located(**(overrides or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"setting '{key}': {first['msg']}",
            f"fix it in {toml_path.name}, the COPILOT_* environment or the flags",
        ) from None
    except SettingsError as exc:
        raise _environment_error(exc) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read {toml_path}: {exc}", "fix the TOML syntax") from None


def _environment_error(exc: SettingsError) -> ConfigError:
    """pydantic-settings names only the field and the source; name the variables the user set."""
    field = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(exc))
    if field is None:
        return ConfigError(f"cannot read the settings: {exc}", "fix copilot.toml or the COPILOT_* environment")
    prefix = f"COPILOT_{field.group(1)}".upper()
    names = sorted(name for name in os.environ if name.upper().startswith(prefix))
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    return ConfigError(
        f"cannot parse {', '.join(names) or prefix}{cause}",
        "a table or list setting in the environment must be JSON, e.g. COPILOT_TRAIN__HPARAMS='{\"lr\": 0.01}'",
    )
