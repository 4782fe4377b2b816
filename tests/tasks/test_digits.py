"""The built-in digits task, its CNN, the task registry and load_task."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import wattwise
from wattwise.errors import InputError, UnknownNameError, WorkloadError
from wattwise.tasks import DigitsCNN, Task, digits, get, load_task, names
from wattwise.tasks.digits import _load_arrays, stratified_split


@pytest.fixture(scope="module")
def task() -> Task:
    return digits()


def test_digits_data_is_scaled_split_and_stratified(task: Task) -> None:
    assert task.name == "digits" and task.num_classes == 10
    assert isinstance(task.train_data, TensorDataset) and isinstance(task.val_data, TensorDataset)
    assert (len(task.train_data), len(task.val_data)) == (1437, 360)
    x, _ = task.train_data[:]
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) == pytest.approx(1.0)
    assert task.example_input.shape == (1, 1, 8, 8)
    val_counts = Counter(task.val_data[:][1].tolist())
    # Stratified 80/20: each of the ten classes has ~36 of the 360 validation images.
    assert sorted(val_counts) == list(range(10))
    assert all(35 <= n <= 37 for n in val_counts.values())


def test_digits_reads_sklearns_file_as_load_digits_does_without_importing_sklearn() -> None:
    # Every trial and confirmation child builds this task: importing scikit-learn there cost
    # about 1.2 s a child, so the task reads the bundled file itself. Same pixels, same labels.
    code = (
        "import sys; from wattwise.tasks.digits import _load_arrays; _load_arrays(); "
        "print(any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from sklearn.datasets import load_digits

    pixels, labels = _load_arrays()
    reference = load_digits()
    assert np.array_equal(pixels, reference.images) and np.array_equal(labels, reference.target)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_split_partitions_every_class_in_proportion(seed: int) -> None:
    _, labels = _load_arrays()
    train, val = stratified_split(labels, 0.2, seed)
    assert len(val) == 360 and len(train) == 1437
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    for cls, n in zip(*np.unique(labels, return_counts=True), strict=True):
        assert abs(int((labels[val] == cls).sum()) - 0.2 * n) < 1.0


def test_split_depends_on_seed(task: Task) -> None:
    other = digits(seed=1)
    assert not torch.equal(task.val_data[:][0], other.val_data[:][0])
    again = digits(seed=0)
    assert torch.equal(task.val_data[:][0], again.val_data[:][0])


def test_digits32_upsamples_and_keeps_the_network_cheap() -> None:
    t32 = digits(size=32)
    assert t32.name == "digits32"
    assert t32.example_input.shape == (1, 1, 32, 32)
    x32, _ = t32.train_data[:]
    assert float(x32.min()) >= 0.0 and float(x32.max()) <= 1.0
    model = t32.model_factory()
    assert model.default_input_size == (1, 32, 32)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("size", [4, 7, 513, 8.0, True])
def test_bad_size_is_refused_naming_the_field(size: object) -> None:
    with pytest.raises(InputError, match="size"):
        digits(size=size)  # type: ignore[arg-type]


def test_width_scales_the_network() -> None:
    full, half = DigitsCNN(), DigitsCNN(width=0.5)
    n_full = sum(p.numel() for p in full.parameters())
    n_half = sum(p.numel() for p in half.parameters())
    assert 0.2 < n_half / n_full < 0.35  # conv weights scale with width²
    assert half(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(InputError, match="width"):
        DigitsCNN(width=0)


def test_model_factory_pickles_for_the_measuring_child(task: Task) -> None:
    factory = pickle.loads(pickle.dumps(task.model_factory))
    assert isinstance(factory(), DigitsCNN)
    assert isinstance(pickle.loads(pickle.dumps(DigitsCNN(width=0.25))), DigitsCNN)


def test_digits_cnn_prunes_with_torch_pruning() -> None:
    tp = pytest.importorskip("torch_pruning")
    model = DigitsCNN().eval()
    example = torch.randn(1, 1, 8, 8)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )
    pruner.step()
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.4 * before  # channels physically removed, not masked
    assert model(example).shape == (1, 10)


@pytest.mark.slow
def test_fit_reaches_97_percent_within_a_minute(task: Task) -> None:
    # One thread: on a shared 2-core machine, two OpenMP threads spinning against other
    # processes made this 10x slower (53 s vs 6.6 s); alone, either takes 2-3 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        model = task.fit(task.model_factory())
        elapsed_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    accuracy = task.evaluate(model)
    assert accuracy >= 0.97, f"val accuracy {accuracy:.3f}"
    assert elapsed_s < 60, f"took {elapsed_s:.1f} s"


# --- registry and load_task ----------------------------------------------------------------


def test_builtin_registry() -> None:
    assert {"digits", "digits32"} <= set(names())
    assert get("digits").name == "digits"
    assert load_task("digits32").name == "digits32"
    assert wattwise.tasks.get("digits").num_classes == 10


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="digits"):
        load_task("digts")


_FACTORIES = """
import torch
from wattwise.tasks import Task, digits

def good():
    return digits(seed=3)

def raises():
    raise ValueError("dataset missing\\nsecond line")

def wrong_type():
    return [1, 2]

NOT_CALLABLE = 42
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real module of task factories, importable for the test's duration."""
    name = f"ww_task_factories_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(_FACTORIES)
    (tmp_path / f"{name}_broken.py").write_text("def oops(:\n")
    (tmp_path / f"{name}_dep.py").write_text("import ww_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for suffix in ("", "_broken", "_dep"):
        sys.modules.pop(name + suffix, None)


def test_load_task_from_a_factory(factories: str) -> None:
    task = load_task(f"{factories}:good")
    assert isinstance(task, Task) and task.seed == 3


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ("ww_no_such_module_x:f", InputError, ["no module named 'ww_no_such_module_x'"]),
        ("{m}:missing", InputError, ["has no attribute 'missing'"]),
        ("{m}:NOT_CALLABLE", InputError, ["int", "not a callable"]),
        ("{m}:raises", WorkloadError, ["raised ValueError: dataset missing"]),
        ("{m}:wrong_type", InputError, ["returned a list", "Task"]),
        ("{m}_broken:oops", InputError, ["SyntaxError"]),
        ("{m}_dep:f", InputError, ["ww_not_installed_anywhere"]),
        ("not a spec:", InputError, ["package.module:factory"]),
    ],
)
def test_load_task_errors_are_one_line(
    factories: str, spec: str, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        load_task(spec.format(m=factories))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
