"""Rebuilding a torch deployment in another process: a model that does not pickle travels as
``torch.export`` bytes, and those are read back by the one ``.pt2`` loader, so bytes that
carry code are refused there like any hostile archive."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.deploy._rebuild import Rebuild
from wattwise.deploy._safe_load import ArtifactRefused

X = torch.rand(2, 6, generator=torch.Generator().manual_seed(0))


class _Unpicklable(nn.Module):
    """A model holding a local function: pickle refuses it, torch.export does not mind."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.hook = lambda: None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def _with_guards_code(pt2: bytes, code: str) -> bytes:
    src, out = zipfile.ZipFile(io.BytesIO(pt2)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                doc["guards_code"] = [code]
                data = json.dumps(doc).encode()
            dst.writestr(info, data)
    return out.getvalue()


def test_a_model_that_does_not_pickle_is_rebuilt_from_its_program() -> None:
    torch.manual_seed(0)
    model = _Unpicklable().eval()
    deployment = wd.Deployment(backend="eager", batch_size=2)
    rebuild = Rebuild(deployment, model, X[:1])
    assert rebuild.model_pickle is None and rebuild.model_pt2 is not None
    rebuilt = pickle.loads(pickle.dumps(rebuild))()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(X), model(X))


def test_a_picklable_model_travels_pickled() -> None:
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    rebuild = Rebuild(wd.Deployment(backend="eager_cl"), model, X[:1])
    assert rebuild.model_pt2 is None
    with torch.no_grad():
        torch.testing.assert_close(rebuild()(X), model(X))


def test_program_bytes_that_carry_code_are_refused_and_the_code_never_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    rebuild = Rebuild(wd.Deployment(backend="eager"), _Unpicklable().eval(), X[:1])
    assert rebuild.model_pt2 is not None
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() is None"
    rebuild.model_pt2 = _with_guards_code(rebuild.model_pt2, payload)
    with pytest.raises(ArtifactRefused, match="guards_code"):
        rebuild()
    assert not marker.exists()
