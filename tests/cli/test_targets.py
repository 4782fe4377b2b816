"""resolve_target: built-in names, module:factory, files, and the errors for each."""

from __future__ import annotations

import pickle
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from wattwise.cli._targets import (
    ResolvedTarget,
    builtin_names,
    parse_batch_sizes,
    parse_shape,
    resolve_target,
)
from wattwise.errors import InputError, WorkloadError
from wattwise.tasks import DigitsCNN


def _roundtrip(target: ResolvedTarget) -> nn.Module:
    """Build the model the way the harness does: from a pickled factory."""
    model = pickle.loads(pickle.dumps(target.factory))()
    assert isinstance(model, nn.Module)
    return model


@pytest.mark.parametrize("name", ["digits_cnn", "digits"])
def test_digits_cnn(name: str) -> None:
    target = resolve_target(name)
    assert (target.name, target.kind, target.input_shape) == ("digits_cnn", "builtin", (1, 1, 8, 8))
    model = _roundtrip(target).eval()
    assert model(target.example_input).shape == (1, 10)


def test_architectures_are_builtin_targets_at_their_own_size() -> None:
    assert {"digits_cnn", "mobilenetv3_small"} <= set(builtin_names())
    target = resolve_target("mobilenetv3_small")
    assert target.input_shape == (1, 3, 224, 224) and target.kind == "builtin"
    model = _roundtrip(target).eval()
    with torch.no_grad():
        assert model(target.example_input).shape == (1, 1000)


def test_input_shape_overrides_the_builtin_one() -> None:
    assert resolve_target("mobilenetv3_small", input_shape=(1, 3, 96, 96)).input_shape == (
        1,
        3,
        96,
        96,
    )


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(InputError, match="did you mean mobilenetv3_small") as info:
        resolve_target("mobilenet_v3_small")
    assert "\n" not in str(info.value)


# --- package.module:factory ---------------------------------------------------------------

_MODELS = """
import torch
from torch import nn

class Sized(nn.Module):
    default_input_size = (4, 6)
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
    def forward(self, x):
        return self.fc(x).mean(1)

class WithExample(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 2)
        self.example_input = torch.zeros(7, 5)
    def forward(self, x):
        return self.fc(x)

def plain():
    return nn.Sequential(nn.Linear(16, 4))

by_lambda = lambda: Sized()  # noqa: E731 - the child re-imports the module, so this works

INSTANCE = nn.Linear(16, 4)

def raises():
    raise ValueError("weights not found")

def not_a_model():
    return "model"
"""


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"ww_target_models_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("attr", "shape"),
    [("Sized", (1, 4, 6)), ("WithExample", (1, 5)), ("by_lambda", (1, 4, 6))],
)
def test_factory_shape_from_the_model(models: str, attr: str, shape: tuple[int, ...]) -> None:
    target = resolve_target(f"{models}:{attr}")
    assert target.kind == "factory" and target.input_shape == shape
    assert _roundtrip(target)(target.example_input).shape[0] == 1


def test_factory_without_a_shape_needs_input_shape(models: str) -> None:
    with pytest.raises(InputError, match="pass --input-shape for TARGET"):
        resolve_target(f"{models}:plain")
    target = resolve_target(f"{models}:plain", input_shape=(1, 16))
    assert _roundtrip(target)(target.example_input).shape == (1, 4)
    instance = resolve_target(f"{models}:INSTANCE", input_shape=(1, 16))
    assert isinstance(_roundtrip(instance), nn.Linear)


@pytest.mark.parametrize(
    ("attr", "error", "words"),
    [
        ("raises", WorkloadError, "raised ValueError: weights not found"),
        ("not_a_model", InputError, "returned a str"),
        ("missing", InputError, "has no attribute 'missing'"),
    ],
)
def test_factory_errors(models: str, attr: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        resolve_target(f"{models}:{attr}", input_shape=(1, 16))


def test_missing_module() -> None:
    with pytest.raises(InputError, match="no module named 'ww_nowhere_xyz'"):
        resolve_target("ww_nowhere_xyz:build")


# --- files --------------------------------------------------------------------------------


def test_pt2_file_round_trips(tmp_path: Path) -> None:
    model = DigitsCNN().eval()
    x = torch.randn(1, 1, 8, 8)
    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    target = resolve_target(str(path))
    assert (target.kind, target.input_shape, target.fixed_batch_size) == ("file", (1, 1, 8, 8), 1)
    loaded = _roundtrip(target).eval()  # eval() must be accepted for exported modules
    torch.testing.assert_close(loaded(x), model(x))


def test_pt2_with_a_dynamic_batch(tmp_path: Path) -> None:
    model = DigitsCNN().eval()
    path = tmp_path / "dyn.pt2"
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    target = resolve_target(str(path))
    assert target.fixed_batch_size is None and target.input_shape == (1, 1, 8, 8)
    assert _roundtrip(target)(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_pickled_model_is_refused_with_the_export_recipe(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(DigitsCNN(), str(path))
    with pytest.raises(InputError, match=r"pickled model.*torch\.export\.save") as info:
        resolve_target(str(path))
    assert "\n" not in str(info.value)


def test_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(DigitsCNN().state_dict(), str(path))
    with pytest.raises(InputError, match=r"state dict.*no architecture.*module:factory"):
        resolve_target(str(path))


def test_torchscript_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(3, 2)), str(path))
    with pytest.raises(InputError, match="TorchScript"):
        resolve_target(str(path))


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.pt2", None, "no such file"),
        ("garbage.pt2", b"\x00not a zip at all", "not a torch.export archive"),
        ("garbage.pt", b"\x80\x02garbage", "not a file torch.save wrote"),
        ("model.onnx", b"onnx", ".onnx files are not supported"),
    ],
)
def test_unusable_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, content: bytes | None, words: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=words):
        resolve_target(str(path))
    assert "Traceback" not in capfd.readouterr().err  # torch's own loggers stay quiet


def test_corrupt_zip_pt2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "corrupt.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a program")
    with pytest.raises(InputError, match=r"not a torch\.export archive"):
        resolve_target(str(path))
    assert "Traceback" not in capfd.readouterr().err


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"without deployment\.json"):
        resolve_target(str(tmp_path))


# --- shapes and batch sizes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1,3,224,224", (1, 3, 224, 224)),
        ("1x3x8x8", (1, 3, 8, 8)),
        ("(1, 3, 8, 8)", (1, 3, 8, 8)),
        (" 1,16 ", (1, 16)),
    ],
)
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "expected integers"),
        ("abc", "expected integers"),
        ("1,3.5,8", "expected integers"),
        ("1,-3,8", ">= 1"),
        ("1,0,8", ">= 1"),
        ("3", "batch dimension"),
        ("2,3,8,8", "first dimension is the batch"),
        ("1,100000,100000", "too large"),
    ],
)
def test_bad_shape_strings(text: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as info:
        parse_shape(text)
    assert "--input-shape" in str(info.value)


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("1,32") == [1, 32]
    assert parse_batch_sizes("8, 8 ,2") == [8, 2]
    for bad in ("", "0", "a,b", "1,-2"):
        with pytest.raises(InputError, match="--batch-size"):
            parse_batch_sizes(bad)


def test_resolved_target_validates_itself() -> None:
    with pytest.raises(InputError, match="batch size 1"):
        ResolvedTarget("x", DigitsCNN, torch.zeros(2, 1, 8, 8), "builtin")
    with pytest.raises(InputError, match="kind"):
        ResolvedTarget("x", DigitsCNN, torch.zeros(1, 1, 8, 8), "zip")


def test_exported_deployment_directory_is_a_target(tmp_path: Path) -> None:
    from wattwise.deploy import deploy, export_deployment

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(1, 1, 8, 8)
    deployed = deploy(model, backend="onnxruntime", precision="fp32", example_input=x)
    out = export_deployment(deployed, tmp_path / "artifact", task_name="digits")
    resolved = resolve_target(str(out))
    assert resolved.kind == "file"
    assert resolved.input_shape == (1, 1, 8, 8)
    runner_model = resolved.factory()  # rebuilt from the directory, nothing unpickled
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.as_tensor(runner_model(x)), expected, atol=1e-4)
