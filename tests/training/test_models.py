"""Loading a user's model file: the picking rules, every bad input's message, the forward check,
the summary, and carrying weights across a swap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from copilot.errors import CopilotError, EnvironmentSetupError, ModelLoadError
from copilot.events import DataSpec
from copilot.training.models import (
    ModelCheckError,
    check_forward,
    load_model,
    matching_torchvision_install,
    summarize_model,
    transfer_weights,
)

SHAPES = DataSpec(name="shapes", task="classification", input_shape=(3, 32, 32), num_classes=10, train_size=8, val_size=8)
TEXT = DataSpec(
    name="text", task="sequence", input_shape=(16,), input_dtype="int64", num_classes=30, train_size=8, val_size=8
)
REPO = Path(__file__).resolve().parents[2]


def load_error(spec: Path | str, **model_args: object) -> CopilotError:
    with pytest.raises(CopilotError) as caught:
        load_model(str(spec), model_args)
    return caught.value


# --------------------------------------------------------------------------- picking the model


def test_single_class_defined_in_the_file_is_the_model(tiny_cnn: Path) -> None:
    loaded = load_model(str(tiny_cnn), {"width": 4})
    assert loaded.class_name == "TinyCNN"
    assert loaded.model.conv.out_channels == 4
    assert loaded.source_path == tiny_cnn.resolve()
    assert loaded.file_hparams == {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 2}
    assert loaded.has_custom_loss is False


def test_build_model_wins_over_classes_and_imported_modules_do_not_count(write_model) -> None:
    path = write_model(
        "factory.py",
        """
        from torch import nn
        from torch.nn import Linear

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = Linear(4, 2)

            def loss_function(self, outputs, targets):
                return outputs.sum()

        def build_model(scale: int = 1):
            return nn.Sequential(nn.Flatten(), nn.Linear(4 * scale, 2))
        """,
    )
    assert load_model(str(path), {"scale": 2}).model[1].in_features == 8
    picked = load_model(f"{path}:Head", {})
    assert picked.class_name == "Head" and picked.has_custom_loss


def test_a_block_built_inside_the_net_is_not_a_second_candidate(write_model) -> None:
    path = write_model(
        "blocks.py",
        """
        from torch import nn

        class Block(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(width, width)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = nn.Sequential(Block(4), Block(4))
        """,
    )
    assert load_model(str(path), {}).class_name == "Net"


def test_several_candidates_are_listed_with_how_to_pick_one(write_model) -> None:
    path = write_model(
        "two.py",
        """
        from torch import nn

        class Small(nn.Module):
            pass

        class Large(nn.Module):
            pass
        """,
    )
    error = load_error(path)
    assert error.message == "several models in two.py: Small, Large"
    assert "two.py:Small" in error.hint


def test_missing_file(tmp_path: Path) -> None:
    error = load_error(tmp_path / "nothere.py")
    assert error.message.startswith("model file not found:") and "nothere.py" in error.message
    assert error.hint


def test_syntax_error_names_file_and_line(write_model) -> None:
    path = write_model("broken.py", "import torch\n\nclass Net(torch.nn.Module:\n    pass\n")
    error = load_error(path)
    assert error.message.startswith("syntax error in broken.py:3:")


def test_import_error_names_the_missing_module(write_model) -> None:
    path = write_model("needs.py", "import torch\nimport no_such_package_xyz\n")
    error = load_error(path)
    assert error.message == "needs.py:2 imports 'no_such_package_xyz', which is not installed"
    assert "pip install no_such_package_xyz" in error.hint


def test_a_missing_package_is_the_environments_problem(write_model) -> None:
    error = load_error(write_model("needs.py", "import torch\nimport no_such_package_xyz\n"))
    assert isinstance(error, EnvironmentSetupError)


def test_a_package_that_fails_inside_its_own_import_is_the_environments_problem(
    write_model, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What PyPI's torchvision does beside a CPU-only torch: it is installed, and its own import raises.
    site = tmp_path_factory.mktemp("site-packages")
    (site / "visionish").mkdir(parents=True)
    (site / "visionish" / "__init__.py").write_text("raise RuntimeError('operator visionish::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(site))
    path = write_model("script.py", "import torch\nfrom visionish import datasets\n\nclass Net(torch.nn.Module):\n    pass\n")

    error = load_error(path)

    assert isinstance(error, EnvironmentSetupError)
    assert error.message == "script.py:2 imports visionish, which fails to import here: RuntimeError: operator visionish::nms does not exist"
    assert "reinstall visionish" in error.hint


def test_the_torchvision_hint_is_the_build_matching_this_torch() -> None:
    release, _, variant = torch.__version__.partition("+")
    minor = int(release.split(".")[1])
    hint = matching_torchvision_install()
    assert f"'torchvision==0.{minor + 15}.*'" in hint  # torch 2.13 pairs with torchvision 0.28
    assert f"https://download.pytorch.org/whl/{variant or 'cpu'}" in hint or torch.version.cuda


def test_a_crash_in_the_users_own_helper_module_stays_the_models_problem(write_model) -> None:
    write_model("helpers.py", "raise ValueError('bad table')\n")
    error = load_error(write_model("net.py", "import torch\nimport helpers\n"))
    assert isinstance(error, ModelLoadError) and "bad table" in error.message


def test_error_while_the_file_runs(write_model) -> None:
    error = load_error(write_model("crash.py", "x = 1\nraise ValueError('bad constant')\n"))
    assert error.message == "running crash.py:2 failed: ValueError: bad constant"


def test_no_model_found(write_model) -> None:
    error = load_error(write_model("empty.py", "import torch\nWIDTH = 3\n"))
    assert error.message == "no model found in empty.py"
    assert "build_model()" in error.hint


def test_named_model_that_does_not_exist_lists_the_defined_ones(tiny_cnn: Path) -> None:
    error = load_error(f"{tiny_cnn}:Missing")
    assert error.message == "tiny_cnn.py has no model class or function named 'Missing'"
    assert error.hint == "models defined there: TinyCNN"


def test_constructor_arguments_missing_are_named_with_the_flag_to_give_them(write_model) -> None:
    path = write_model(
        "args.py",
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, width, depth, dropout=0.1):
                super().__init__()
        """,
    )
    error = load_error(path)
    assert error.message == "Net() needs arguments: width, depth"
    assert "--model-arg width=..." in error.hint and "[model.args]" in error.hint
    unknown = load_error(path, width=1, depth=2, colour="red")
    assert unknown.message == "Net() takes no argument 'colour'"
    assert "width, depth, dropout" in unknown.hint


def test_constructor_that_raises_points_at_its_line(write_model) -> None:
    path = write_model(
        "ctor.py",
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(-1, 3)
        """,
    )
    error = load_error(path)
    assert error.message.startswith("building Net() failed at ctor.py:6: RuntimeError:")


def test_hparams_must_be_a_dict(write_model) -> None:
    path = write_model("hp.py", "from torch import nn\nHPARAMS = [0.1]\nclass Net(nn.Module):\n    pass\n")
    assert load_error(path).message == "HPARAMS in hp.py is a list, not a dict"


# --------------------------------------------------------------------------- checking against the data


def test_broken_sample_model_fails_its_first_forward_with_the_shape_mismatch() -> None:
    loaded = load_model(str(REPO / "sample_models" / "broken_cnn.py"), {})
    with pytest.raises(ModelCheckError) as caught:
        check_forward(loaded, torch.randn(2, 3, 32, 32), SHAPES)
    error = caught.value
    assert error.kind == "forward"
    assert error.message.startswith("forward pass failed on input [2, 3, 32, 32] at broken_cnn.py:")
    assert "mat1 and mat2 shapes cannot be multiplied" in error.message
    assert "[3, 32, 32]" in error.hint


def test_output_shape_must_fit_the_task(write_model) -> None:
    path = write_model(
        "wrong_out.py",
        """
        from torch import nn

        def build_model():
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 7))
        """,
    )
    with pytest.raises(ModelCheckError) as caught:
        check_forward(load_model(str(path), {}), torch.randn(2, 3, 32, 32), SHAPES)
    assert caught.value.kind == "shape"
    assert caught.value.message == "model output has shape [2, 7] but the shapes data set needs [2, 10] [batch, classes]"


def test_sequence_task_needs_batch_sequence_vocabulary(write_model) -> None:
    path = write_model(
        "lm.py",
        """
        from torch import nn

        class LastTokenOnly(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(30, 8)
                self.out = nn.Linear(8, 30)

            def forward(self, tokens):
                return self.out(self.embed(tokens)[:, -1])
        """,
    )
    loaded = load_model(str(path), {})
    with pytest.raises(ModelCheckError) as caught:
        check_forward(loaded, torch.randint(0, 30, (2, 16)), TEXT)
    assert "[2, 16, 30] [batch, sequence, vocabulary]" in caught.value.message


def test_check_leaves_training_mode_and_batchnorm_statistics_alone(write_model) -> None:
    path = write_model(
        "bn.py",
        """
        from torch import nn

        def build_model():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        """,
    )
    loaded = load_model(str(path), {})
    before = loaded.model[1].running_mean.clone()
    check_forward(loaded, torch.randn(2, 3, 32, 32), SHAPES)
    assert loaded.model.training
    assert torch.equal(loaded.model[1].running_mean, before)


# --------------------------------------------------------------------------- the summary


def test_summary_counts_own_parameters_and_describes_layers() -> None:
    loaded = load_model(str(REPO / "sample_models" / "bad_cnn.py"), {})
    summary = summarize_model(loaded.model, "bad_cnn.py", torch.randn(2, 3, 32, 32))
    by_name = {module.name: module for module in summary.modules}
    assert by_name["conv"].detail == "3->16 k=3 p=1" and by_name["conv"].params == 3 * 16 * 9 + 16
    assert by_name["fc"].detail == "16384->10" and by_name["fc"].params == 16384 * 10 + 10
    assert by_name[""].params == 0 and not by_name[""].is_leaf
    assert summary.total_params == summary.trainable_params == by_name["conv"].params + by_name["fc"].params
    assert summary.activations == ("Sigmoid",)
    assert not summary.has_normalization and not summary.has_residual


def test_trace_finds_functional_activations_normalisation_and_skip_connections(tmp_path: Path) -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.conv(x))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.block = Block()
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.layer_norm(self.block(self.stem(x)), (4, 32, 32))
            return self.fc(x.mean((2, 3)))

    summary = summarize_model(Residual(), tmp_path / "res.py", torch.randn(2, 3, 32, 32))
    assert summary.activations == ("ReLU",)
    assert summary.has_normalization and summary.has_residual
    without_input = summarize_model(Residual(), tmp_path / "res.py")
    assert without_input.activations == () and not without_input.has_residual


def test_adding_a_position_embedding_is_not_a_skip_connection(tmp_path: Path) -> None:
    class Embedded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(30, 8)
            self.positions = nn.Embedding(16, 8)
            self.out = nn.Linear(8, 30)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.tokens(tokens) + self.positions(torch.arange(tokens.shape[1]))
            return self.out(torch.tanh(x))

    summary = summarize_model(Embedded(), tmp_path / "lm.py", torch.randint(0, 30, (2, 16)))
    assert not summary.has_residual
    assert summary.activations == ("Tanh",)
    assert {m.name: m.detail for m in summary.modules}["tokens"] == "30->8"


# --------------------------------------------------------------------------- swapping weights


def test_transfer_copies_parameters_and_buffers_whose_name_and_shape_match() -> None:
    torch.manual_seed(0)
    old = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 10))
    old[1].running_mean.fill_(0.25)
    new = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(16, 10))
    fresh_linear = new[3].weight.clone()
    transferred, total = transfer_weights(old, new)
    # conv weight+bias, bn weight+bias+running_mean+running_var+num_batches_tracked, linear bias (weight differs)
    assert (transferred, total) == (8, 9)
    assert torch.equal(new[0].weight, old[0].weight)
    assert torch.equal(new[1].running_mean, torch.full((8,), 0.25))
    assert torch.equal(new[3].bias, old[3].bias)
    assert torch.equal(new[3].weight, fresh_linear)
    assert math.isclose(float(new[1].running_mean.sum()), 2.0)
