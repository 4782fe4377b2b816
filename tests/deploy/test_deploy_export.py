"""Export: a self-contained directory that reloads elsewhere; corrupted ones fail in one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.errors import InputError
from wattwise.measure import measure

# Runs in a fresh interpreter: load each artifact, check it against its stored outputs, and
# save what it answers so the test can compare with eager fp32 here.
FRESH = r"""
import json, sys
import numpy as np
from wattwise.deploy import load_artifact
report = {}
for path in sys.argv[1:]:
    art = load_artifact(path)
    check = art.verify()
    out = art(art.example_input.repeat(art.deployment.batch_size, 1, 1, 1))
    np.save(path + ".fresh.npy", out.float().numpy(), allow_pickle=False)
    report[path] = {"passed": check.passed, "backend": art.deployment.backend,
                    "precision": art.deployment.precision, "runtime": art.manifest["runtime"]}
print("REPORT" + json.dumps(report))
"""


def _fresh_process(*paths: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


@pytest.mark.slow
def test_exported_artifacts_reload_in_a_fresh_process(tmp_path, task, trained, pt2e_model, calib):
    x = task.example_input
    ort = wd.deploy(
        trained, "onnxruntime", "int8", example_input=x, calibration=calib, batch_size=8
    )
    compiled = wd.deploy(
        pt2e_model, "compile", "int8", example_input=x, calibration=calib, batch_size=8
    )
    m = measure(ort.module, x, batch_size=8, isolate=False, max_time_s=0.3)
    a = wd.export_deployment(
        ort, tmp_path / "ort", measurement=m, accuracy=task.evaluate(ort.module), task_name="digits"
    )
    b = wd.export_deployment(
        compiled, tmp_path / "compiled", task_name="digits", how_made="PT2E int8"
    )
    assert (a / "model.onnx").is_file() and not (a / "model.pt2").exists()
    assert (b / "model.pt2").is_file() and not (b / "model.onnx").exists()

    report = _fresh_process(a, b)
    assert report[str(a)] == {
        "passed": True,
        "backend": "onnxruntime",
        "precision": "int8",
        "runtime": "onnxruntime",
    }
    assert report[str(b)] == {
        "passed": True,
        "backend": "compile",
        "precision": "int8",
        "runtime": "torch.export",
    }
    # Reloaded, each artifact computes what its deployment computed here. (Against fp32 the
    # check is the int8 cosine bound, which one item of the fixed example can miss by chance.)
    x8 = x.repeat(8, 1, 1, 1)
    with torch.no_grad():
        for path, dep in ((a, ort), (b, compiled)):
            fresh = torch.from_numpy(np.load(f"{path}.fresh.npy"))
            assert torch.allclose(fresh, dep.module(x8), atol=1e-3, rtol=1e-3), path
            assert wd.compare_outputs([trained(x8)], [fresh], "int8").value > 0.9


def test_manifest_and_model_card_carry_energy_with_its_source(tmp_path, random_model):
    x = torch.rand(1, 1, 8, 8)
    dep = wd.deploy(random_model, "onnxruntime", "fp32", example_input=x, batch_size=4, threads=1)
    m = measure(dep.module, x, batch_size=4, threads=1, isolate=False, max_time_s=0.3)
    out = wd.export_deployment(
        dep,
        tmp_path / "art",
        measurement=m,
        accuracy=0.975,
        task_name="digits",
        how_made="random weights",
    )
    manifest = json.loads((out / "deployment.json").read_text())
    assert manifest["schema"] == 1 and manifest["runtime"] == "onnxruntime"
    assert manifest["deployment"] == dep.deployment.to_dict()
    assert manifest["inputs"] == [
        {"file": "example_input.npy", "shape": [1, 1, 8, 8], "dtype": "float32"}
    ]
    expected = manifest["expected"]
    assert expected["energy_j_per_item"] == m.energy_j_per_item
    assert (
        expected["energy_source"] == m.energy_source
        and expected["energy_uncertainty"] == m.energy_uncertainty
    )
    assert expected["co2e_g_per_million_items"] == m.co2e_g_per_million_items
    assert manifest["hardware"]["torch"] == torch.__version__ and manifest["hardware"]["cpu_model"]
    assert manifest["accuracy"] == {"value": 0.975, "task": "digits"}
    assert manifest["check"]["passed"] is True
    card = (out / "MODEL_CARD.md").read_text()
    assert (
        m.energy_source in card and "energy per item" in card and "CO2e per million items" in card
    )
    assert "0.9750" in card and "random weights" in card
    loaded = wd.load_artifact(out)
    assert loaded.deployment == dep.deployment and loaded.example_input.shape == (1, 1, 8, 8)
    assert loaded.verify().passed


def test_export_is_atomic_and_will_not_clobber(tmp_path, random_model):
    dep = wd.deploy(random_model, "eager", "fp32", example_input=torch.rand(1, 1, 8, 8))
    target = tmp_path / "art"
    wd.export_deployment(dep, target)
    assert (target / "model.pt2").is_file()
    with pytest.raises(InputError, match="not empty"):
        wd.export_deployment(dep, target)
    with pytest.raises(InputError, match="accuracy"):
        wd.export_deployment(dep, tmp_path / "other", accuracy=97.5)
    assert not (tmp_path / "other").exists()
    wd.export_deployment(dep, target, overwrite=True, how_made="second")
    assert "second" in (target / "MODEL_CARD.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp dirs left behind


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        y = self.linear(x)
        if float(y.sum()) > 0:  # data-dependent Python branch: torch.export refuses it
            return y * 2
        return y


def test_when_torch_export_fails_the_card_says_so_and_onnx_is_kept(tmp_path):
    torch.manual_seed(0)
    dep = wd.deploy(_Branchy().eval(), "eager", "fp32", example_input=torch.randn(1, 4))
    out = wd.export_deployment(dep, tmp_path / "art")
    manifest = json.loads((out / "deployment.json").read_text())
    assert manifest["runtime"] == "onnxruntime" and (out / "model.onnx").is_file()
    assert any("torch.export failed" in note for note in manifest["notes"])
    assert "torch.export failed" in (out / "MODEL_CARD.md").read_text()
    assert wd.load_artifact(out).verify().passed


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    torch.manual_seed(0)
    from wattwise.tasks import DigitsCNN

    model = DigitsCNN(width=0.25).eval()
    x = torch.rand(1, 1, 8, 8)
    root = tmp_path_factory.mktemp("artifacts")
    onnx_dir = wd.export_deployment(
        wd.deploy(model, "onnxruntime", "fp32", example_input=x), root / "onnx"
    )
    pt2_dir = wd.export_deployment(wd.deploy(model, "eager", "fp32", example_input=x), root / "pt2")
    return onnx_dir, pt2_dir


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _set_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "deployment.json").read_text())
    manifest.update(changes)
    (path / "deployment.json").write_text(json.dumps(manifest))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_unchecked(path: Path, model_file: str) -> None:
    """Truncate the model file and drop the manifest's checksums: loading itself must notice."""
    _truncate(path / model_file)
    _set_manifest(path, files={})


def _pickled_weight(art: Path) -> None:
    """Mark a weight of the .pt2 archive as pickled (what a tampered archive would do)."""
    src = art / "model.pt2"
    tmp = art / "rewritten.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    tmp.replace(src)
    # Resealed, as an attacker would: the checksum passes and the pickled weight is what's refused.
    files = json.loads((art / "deployment.json").read_text())["files"]
    files["model.pt2"]["sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
    files["model.pt2"]["size_bytes"] = src.stat().st_size
    _set_manifest(art, files=files)


CORRUPTIONS = {
    "missing manifest": ("onnx", lambda p: (p / "deployment.json").unlink(), "deployment.json"),
    "manifest not json": (
        "onnx",
        lambda p: (p / "deployment.json").write_text("{oops"),
        "deployment.json",
    ),
    "future schema": ("onnx", lambda p: _set_manifest(p, schema=2), "deployment.json"),
    "bad deployment": (
        "onnx",
        lambda p: _set_manifest(p, deployment={"backend": "tvm"}),
        "deployment.json",
    ),
    "missing model": ("onnx", lambda p: (p / "model.onnx").unlink(), "model.onnx"),
    "truncated onnx": ("onnx", lambda p: _truncate(p / "model.onnx"), "model.onnx"),
    "truncated onnx, no checksum": (
        "onnx",
        lambda p: _truncate_unchecked(p, "model.onnx"),
        "model.onnx",
    ),
    "missing example": ("onnx", lambda p: (p / "example_input.npy").unlink(), "example_input.npy"),
    "escaping file name": (
        "onnx",
        lambda p: _set_manifest(p, model_file="../model.onnx"),
        "deployment.json",
    ),
    "truncated pt2": (
        "pt2",
        lambda p: _truncate_unchecked(p, "model.pt2"),
        "model.pt2",
    ),
    "pickled weight in pt2": ("pt2", _pickled_weight, "stored as a pickled object"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_artifact_fails_in_one_line_naming_the_file(tmp_path, artifacts, case):
    kind, corrupt, names = CORRUPTIONS[case]
    art = _copy(artifacts[0] if kind == "onnx" else artifacts[1], tmp_path / "art")
    corrupt(art)
    with pytest.raises(InputError) as info:
        wd.load_artifact(art)
    message = str(info.value)
    assert names in message and "\n" not in message


def test_loading_something_that_is_not_an_artifact(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        wd.load_artifact(tmp_path / "nope")
    with pytest.raises(InputError, match=r"deployment\.json"):
        wd.load_artifact(tmp_path)
