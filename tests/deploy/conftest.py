"""Shared fixtures: the digits task, a briefly trained DigitsCNN, a PT2E-quantized copy."""

from __future__ import annotations

import warnings

import pytest
import torch

from wattwise.tasks import DigitsCNN, digits


@pytest.fixture(scope="session")
def task():
    return digits()


@pytest.fixture(scope="session")
def trained(task):
    """Trained once per session: 6 epochs reach ~99% validation accuracy in a few seconds."""
    torch.manual_seed(0)
    return task.fit(task.model_factory(), epochs=6)


@pytest.fixture(scope="session")
def calib(task):
    return task.calibration_batches(n_items=256, batch_size=32)


@pytest.fixture
def random_model():
    """Random weights are enough for equivalence checks (and faster than training)."""
    torch.manual_seed(0)
    return DigitsCNN(width=0.5).eval()


@pytest.fixture(scope="session")
def pt2e_model(trained, calib):
    """``trained`` quantized with torchao's PT2E flow (what wattwise.Quantize('pt2e-int8') makes)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    exported = torch.export.export(
        trained, (calib[0],), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    ).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for batch in calib:
                prepared(batch)
        converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    return converted
