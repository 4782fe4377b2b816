"""The steps of preparing a deployment, each on its own: inputs, backend, preparing, checking.
(``test_deploy_backends.py`` runs them together through ``wattwise.deploy``.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.deploy._prepare import (
    backend_for,
    check_against_eager,
    checked_inputs,
    prepare_copy,
)
from wattwise.errors import InputError, UnavailableError, WorkloadError

X = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class _RefusesToMove(nn.Linear):
    """A model whose ``.to()`` fails the way a third-party layer might."""

    def to(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot move this layer\nand a long traceback-like tail")


def test_inputs_become_tuples_of_cpu_tensors_or_are_refused(random_model) -> None:
    example, calib = checked_inputs(random_model, X, [X, (X,)])
    assert len(example) == 1 and torch.equal(example[0], X) and example[0].device.type == "cpu"
    assert [len(b) for b in calib] == [1, 1]
    with pytest.raises(InputError, match=r"nn\.Module"):
        checked_inputs(lambda x: x, X, None)
    with pytest.raises(InputError, match="example_input needs a batch dimension"):
        checked_inputs(random_model, torch.tensor(1.0), None)
    with pytest.raises(InputError, match="list of input batches"):
        checked_inputs(random_model, X, X)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"calibration\[1\]"):
        checked_inputs(random_model, X, [X, "not a tensor"])
    with pytest.raises(InputError, match="as many tensors"):
        checked_inputs(random_model, X, [(X, X)])


def test_the_backend_is_checked_before_anything_is_prepared(random_model) -> None:
    backend, notes = backend_for(random_model, wd.Deployment(backend="eager_cl"), (X,))
    assert backend.name == "eager_cl" and not any("channels_last" in n for n in notes)
    _, notes = backend_for(random_model, wd.Deployment(backend="eager_cl"), (X.flatten(1),))
    assert any("4-D inputs only" in n for n in notes)
    with pytest.raises(InputError, match="can't run precision 'int8' on cpu"):
        backend_for(random_model, wd.Deployment(precision="int8"), (X,))
    if not torch.cuda.is_available():
        with pytest.raises(UnavailableError):
            backend_for(random_model, wd.Deployment(device="cuda"), (X,))


def test_a_backend_failure_is_one_line_and_the_source_model_is_untouched() -> None:
    source = _RefusesToMove(4, 2).eval()
    deployment = wd.Deployment()
    backend, _ = backend_for(source, deployment, (torch.ones(1, 4),))
    with pytest.raises(WorkloadError) as err:
        prepare_copy(backend, source, deployment, (torch.ones(1, 4),), [])
    assert str(err.value) == (
        "backend 'eager' failed to prepare the model at fp32: RuntimeError: cannot move this layer"
    )

    model = nn.Linear(4, 2).eval()
    before = model.weight.detach().clone()
    prepared = prepare_copy(backend, model, deployment, (torch.ones(1, 4),), [])
    assert prepared.module(torch.ones(1, 4)).shape == (1, 2)
    assert prepared.module.core.model is not model and torch.equal(model.weight, before)


def test_the_check_compares_with_eager_on_the_example_and_the_calibration(random_model) -> None:
    deployment = wd.Deployment(batch_size=4)
    calib = [(torch.rand(16, 1, 8, 8),)]
    result = check_against_eager(random_model, random_model, deployment, (X,), calib)
    assert result.passed and result.metric == "allclose" and result.items == 4 + 16

    def off_by_one(x: torch.Tensor) -> torch.Tensor:
        return random_model(x) + 1.0

    with pytest.raises(wd.DeploymentMismatch, match="differs from eager fp32") as err:
        check_against_eager(random_model, off_by_one, deployment, (X,), calib)
    assert err.value.result is not None and not err.value.result.passed

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad shape\nmore detail")

    with pytest.raises(WorkloadError) as failed:
        check_against_eager(random_model, broken, deployment, (X,), [])
    assert str(failed.value).endswith("raised ValueError on the check batches: bad shape")
