"""Loading a user's model file: the picking rules, every bad input's message, the forward check,
the summary, and carrying weights across a swap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from copilot.errors import CopilotError, EnvironmentSetupError, ModelLoadError
from copilot.events import DataSpec, ModelRef
from copilot.training.models import ModelCheckError, check_forward, load_model, summarize_model, transfer_weights
from tests.training.conftest import CONVENTIONS

SHAPES = DataSpec(name="shapes", task="classification", input_shape=(3, 32, 32), num_classes=10, train_size=8, val_size=8)
TEXT = DataSpec(
    name="text", task="sequence", input_shape=(16,), input_dtype="int64", num_classes=30, train_size=8, val_size=8
)
REPO = Path(__file__).resolve().parents[2]


def load_error(spec: Path | str, **model_args: object) -> CopilotError:
    with pytest.raises(CopilotError) as caught:
        load_model(ModelRef.parse(str(spec), model_args))
    return caught.value


# --------------------------------------------------------------------------- picking the model


def test_single_class_defined_in_the_file_is_the_model(tiny_cnn: Path) -> None:
    loaded = load_model(ModelRef(path=tiny_cnn, args={"width": 4}))
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
    assert load_model(ModelRef(path=path, args={"scale": 2})).model[1].in_features == 8
    picked = load_model(ModelRef(path=path, name="Head"))
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
    assert load_model(ModelRef(path=path)).class_name == "Net"


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
    assert error.message == "script.py:2 `from visionish import datasets` failed: RuntimeError: operator visionish::nms does not exist"
    assert "reinstall visionish" in error.hint


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
    loaded = load_model(ModelRef(path=REPO / "sample_models" / "broken_cnn.py"))
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
        check_forward(load_model(ModelRef(path=path)), torch.randn(2, 3, 32, 32), SHAPES)
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
    loaded = load_model(ModelRef(path=path))
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
    loaded = load_model(ModelRef(path=path))
    before = loaded.model[1].running_mean.clone()
    check_forward(loaded, torch.randn(2, 3, 32, 32), SHAPES)
    assert loaded.model.training
    assert torch.equal(loaded.model[1].running_mean, before)


# --------------------------------------------------------------------------- the summary


def test_summary_counts_own_parameters_and_describes_layers() -> None:
    loaded = load_model(ModelRef(path=REPO / "sample_models" / "bad_cnn.py"))
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


# --------------------------------------------------------------------------- models as public code bases write them

TINY_GPT = {"config.n_layer": 1, "config.n_head": 2, "config.n_embd": 16}


def text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, TEXT.num_classes, (2, TEXT.input_shape[0] + 1), generator=generator)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def test_nanogpt_config_is_built_from_dotted_arguments_and_the_data_set() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "nanogpt_style.py", args=TINY_GPT), TEXT)
    config = loaded.model.config
    assert (config.n_layer, config.n_head, config.n_embd) == (1, 2, 16)
    assert (config.vocab_size, config.block_size) == (30, 16)  # from the text set, not GPT-2's
    assert config.bias is True  # left at the dataclass's default
    assert loaded.ignored_hooks == ("configure_optimizers",)
    inputs, targets = text_batch()
    contract = check_forward(loaded, inputs, TEXT, targets)
    # Given the targets, nanoGPT returns every position's logits, not only the last one.
    assert (contract.form, contract.passes_targets, contract.class_dim) == ("(logits, loss)", True, -1)


def test_a_config_default_past_the_parameter_budget_is_refused_with_the_sizes_to_give() -> None:
    error = load_error(CONVENTIONS / "mingpt_style.py")
    assert error.message.startswith("GPT(config=GPTConfig(...)) has ")
    assert error.message.endswith("parameters, past the budget of 50,000,000 (sandbox.max_params)")
    assert error.hint == "give smaller sizes (--model-arg config.n_layer=... --model-arg config.n_head=... --model-arg config.n_embd=...)"


def test_minGPT_string_annotated_config_fills_vocab_and_block_size_the_user_left_out() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "mingpt_style.py", args={**TINY_GPT, "config.block_size": 32}), TEXT)
    assert loaded.model.tok_emb.num_embeddings == 30
    assert loaded.model.pos_emb.shape[1] == 32  # given, so kept
    inputs, targets = text_batch()
    assert check_forward(loaded, inputs, TEXT, targets).form == "(logits, loss)"


def test_minGPT_wrapped_in_build_model_is_built_by_it_and_read_as_logits_and_loss() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "mingpt_wrapper_style.py"), TEXT)
    assert loaded.class_name == "GPT" and loaded.model.lm_head.out_features == 30
    assert loaded.ignored_hooks == ("configure_optimizers",)
    inputs, targets = text_batch()
    assert check_forward(loaded, inputs, TEXT, targets).form == "(logits, loss)"


def test_pydantic_config_fields_are_checked_by_name_and_value() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "hf_style.py", args={"config.hidden_size": 4}), SHAPES)
    assert loaded.model.embeddings.out_channels == 4
    assert check_forward(loaded, torch.randn(2, 3, 32, 32), SHAPES, torch.tensor([1, 2])).form == "object"
    unknown = load_error(CONVENTIONS / "hf_style.py", **{"config.hidden": 4})
    assert unknown.message == "TinyImageConfig has no field 'hidden' (--model-arg config.hidden)"
    assert unknown.hint == "its fields: num_channels, hidden_size, num_labels, return_dict"
    wrong = load_error(CONVENTIONS / "hf_style.py", **{"config.hidden_size": "wide"})
    assert wrong.message.startswith("TinyImageConfig: config.hidden_size: Input should be a valid integer")


def test_dotted_arguments_need_a_config_parameter(tiny_cnn: Path) -> None:
    error = load_error(tiny_cnn, **{"width.size": 4})
    assert error.message == "TinyCNN() has no config parameter 'width' for --model-arg width.size"


def test_a_constructor_no_argument_can_build_gets_build_model_suggested(write_model) -> None:
    path = write_model(
        "custom_config.py",
        """
        from torch import nn

        class Settings:  # neither a dataclass nor a pydantic model
            width = 4

        class Net(nn.Module):
            def __init__(self, settings: Settings):
                super().__init__()
                self.fc = nn.Linear(3, settings.width)
        """,
    )
    error = load_error(path)
    assert error.message == "Net() needs arguments: settings"
    assert error.hint == "define build_model() in custom_config.py that returns the model built as you want it"


def test_a_training_script_imports_without_running_its_main_or_reading_our_flags() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "mnist_script.py"))
    assert loaded.class_name == "Net"


def test_an_image_model_for_other_channels_names_both_and_what_would_fit() -> None:
    loaded = load_model(ModelRef(path=CONVENTIONS / "mnist_script.py"))
    with pytest.raises(ModelCheckError) as caught:
        check_forward(loaded, torch.randn(2, 3, 32, 32), SHAPES)
    # The size comes from the later layers (fc1 takes 9216 = 64 x 12 x 12): only 28 x 28 gets there.
    assert caught.value.hint == (
        "first layer 'conv1' expects 1 input channel at 28 x 28; the shapes data set gives 3 x 32 x 32 samples: "
        "set data.channels = 1 and data.image_size = 28 in copilot.toml"
    )
    # Told the settings, the same model fits the data they describe.
    mnist_sized = SHAPES.model_copy(update={"input_shape": (1, 28, 28)})
    assert check_forward(loaded, torch.randn(2, 1, 28, 28), mnist_sized).form == "tensor"
    elsewhere = SHAPES.model_copy(update={"name": "custom"})
    with pytest.raises(ModelCheckError) as caught:
        check_forward(loaded, torch.randn(2, 3, 32, 32), elsewhere)
    assert caught.value.hint.endswith(
        "--dataset shapes with data.channels = 1 and data.image_size = 28 in copilot.toml would fit"
    )
    three_channels = load_model(ModelRef(path=CONVENTIONS / "hf_style.py"))
    gray = SHAPES.model_copy(update={"name": "custom", "input_shape": (1, 28, 28)})
    with pytest.raises(ModelCheckError) as caught:
        check_forward(three_channels, torch.randn(2, 1, 28, 28), gray)
    assert caught.value.hint == (
        "first layer 'embeddings' expects 3 input channels; the custom data set gives 1 x 28 x 28 samples: "
        "--dataset shapes with data.image_size = 28 in copilot.toml would fit"
    )


def test_a_first_layer_mismatch_names_the_fix_each_image_set_can_honour(write_model) -> None:
    """CIFAR-10 is 3 x 32 x 32 whatever the settings; an image folder is resized to data.image_size
    but always read as RGB; only the shapes set draws another channel count."""
    mnist = load_model(ModelRef(path=CONVENTIONS / "mnist_script.py"))
    colour_28 = load_model(
        ModelRef(path=write_model(
            "lenet_rgb.py",
            """
            import torch
            from torch import nn

            class LeNet(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 6, 5)
                    self.fc = nn.Linear(6 * 12 * 12, 10)

                def forward(self, x):
                    return self.fc(torch.flatten(torch.max_pool2d(torch.relu(self.conv(x)), 2), 1))
            """,
        )),
    )  # fmt: skip
    expected = {
        ("cifar10", "mnist"): "first layer 'conv1' expects 1 input channel at 28 x 28; the cifar10 data set gives 3 x 32 x 32 samples: "
        "--dataset shapes with data.channels = 1 and data.image_size = 28 in copilot.toml would fit",
        ("imagefolder", "mnist"): "first layer 'conv1' expects 1 input channel at 28 x 28; the imagefolder data set gives 3 x 32 x 32 "
        "samples: --dataset shapes with data.channels = 1 and data.image_size = 28 in copilot.toml would fit",
        ("cifar10", "colour_28"): "first layer 'conv' expects 3 input channels at 28 x 28; the cifar10 data set gives 3 x 32 x 32 samples: "
        "--dataset shapes with data.image_size = 28 in copilot.toml would fit",
        ("imagefolder", "colour_28"): "first layer 'conv' expects 3 input channels at 28 x 28; the imagefolder data set gives 3 x 32 x 32 "
        "samples: set data.image_size = 28 in copilot.toml",
    }
    for (data_name, model_name), hint in expected.items():
        data = SHAPES.model_copy(update={"name": data_name})
        with pytest.raises(ModelCheckError) as caught:
            check_forward({"mnist": mnist, "colour_28": colour_28}[model_name], torch.randn(2, 3, 32, 32), data)
        assert caught.value.hint == hint
    # Told the setting, the image folder's 28 x 28 images fit.
    resized_folder = SHAPES.model_copy(update={"name": "imagefolder", "input_shape": (3, 28, 28)})
    assert check_forward(colour_28, torch.randn(2, 3, 28, 28), resized_folder).form == "tensor"


def test_an_mlp_for_other_image_sizes_names_the_features_both_ways(write_model) -> None:
    path = write_model(
        "mlp.py",
        """
        from torch import nn

        def build_model():
            return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
        """,
    )
    with pytest.raises(ModelCheckError) as caught:
        check_forward(load_model(ModelRef(path=path)), torch.randn(2, 3, 32, 32), SHAPES)
    assert caught.value.hint == (
        "first layer '1' expects 784 input features; the shapes data set gives 3 x 32 x 32 samples (3,072 flattened): "
        "set data.channels = 1 and data.image_size = 28 in copilot.toml, or make its in_features 3,072"
    )


def test_sequence_logits_in_either_layout_and_an_ambiguous_one_is_an_error(write_model) -> None:
    path = write_model(
        "conv_lm.py",
        """
        from torch import nn

        class ConvLM(nn.Module):
            '''Logits as [batch, vocabulary, sequence], the layout F.cross_entropy takes natively.'''

            def __init__(self, vocab: int = 30):
                super().__init__()
                self.embed = nn.Embedding(vocab, 8)
                self.conv = nn.Conv1d(8, vocab, 3, padding=1)

            def forward(self, tokens):
                return self.conv(self.embed(tokens).transpose(1, 2))
        """,
    )
    inputs, targets = text_batch()
    assert check_forward(load_model(ModelRef(path=path)), inputs, TEXT, targets).class_dim == 1
    square = TEXT.model_copy(update={"input_shape": (30,)})
    with pytest.raises(ModelCheckError) as caught:
        check_forward(load_model(ModelRef(path=path)), torch.randint(0, 30, (2, 30)), square)
    assert caught.value.message == (
        "model output [2, 30, 30] could be [batch, sequence, vocabulary] or [batch, vocabulary, sequence]: "
        "the text data set's sequence length and vocabulary are both 30"
    )


def test_sibling_modules_and_packages_import_as_when_the_script_runs(tmp_path: Path, write_model) -> None:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "__init__.py").write_text("from .mlp import MLP\n", encoding="utf-8")
    (tmp_path / "blocks" / "mlp.py").write_text(
        "from torch import nn\n\nclass MLP(nn.Sequential):\n    def __init__(self):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n",
        encoding="utf-8",
    )
    write_model("widths.py", "HIDDEN = 10\n")
    path = write_model(
        "net.py",
        """
        from torch import nn

        from blocks import MLP
        from widths import HIDDEN

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = MLP()
                assert HIDDEN == 10

            def forward(self, x):
                return self.body(x)
        """,
    )
    check_forward(load_model(ModelRef(path=path)), torch.randn(2, 3, 32, 32), SHAPES)


def test_a_package_failing_at_import_names_the_line_and_torchvision_gets_the_matching_pair(
    tmp_path: Path, write_model
) -> None:
    # A stand-in torchvision beside the model fails as the real one does beside a torch it was not built for.
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n', encoding="utf-8"
    )
    path = write_model("vision.py", "import torch\nfrom torchvision import models\n")
    error = load_error(path)
    assert error.message == (
        "vision.py:2 `from torchvision import models` failed: RuntimeError: operator torchvision::nms does not exist"
    )
    minor = int(torch.__version__.split(".")[1])
    assert f"pip install torch=={torch.__version__.split('+')[0]} torchvision==0.{minor + 15}.*" in error.hint


def test_a_model_file_inside_a_package_imports_its_relatives(tmp_path: Path) -> None:
    package = tmp_path / "mingpt"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "utils.py").write_text("WIDTH = 4\n", encoding="utf-8")
    (package / "model.py").write_text(
        "from torch import nn\n\nfrom mingpt.utils import WIDTH\nfrom .utils import WIDTH as SAME\n\n\n"
        "class Net(nn.Sequential):\n    def __init__(self):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(3 * 32 * 32, WIDTH + SAME + 2))\n",
        encoding="utf-8",
    )
    check_forward(load_model(ModelRef(path=package / "model.py")), torch.randn(2, 3, 32, 32), SHAPES)


def test_a_script_that_exits_at_import_says_where_its_code_belongs(write_model) -> None:
    path = write_model("exits.py", "import argparse\n\nargparse.ArgumentParser().parse_args(['--epochs', '3'])\n")
    error = load_error(path)
    assert error.message == "exits.py exited while it was imported (exit status 2)"
    assert error.hint == 'move the top-level script code under if __name__ == "__main__":'
