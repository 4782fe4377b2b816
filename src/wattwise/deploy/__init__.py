"""Deployment: run a model on a backend × precision × batch × threads × device, check it
against eager fp32, pick the deployment that spends the least energy per item for a scenario,
and export it as a self-contained directory."""

from typing import TYPE_CHECKING

from wattwise._callable import make_callable
from wattwise._core import Availability
from wattwise._lazy import Lazy, load_lazy
from wattwise.deploy import _openvino, _ort  # noqa: F401  (register onnxruntime, openvino)
from wattwise.deploy._backends import is_pt2e_quantized  # (registers the torch backends)
from wattwise.deploy._base import BACKENDS, CALIBRATED_INT8, Backend, probe_backends
from wattwise.deploy._check import CheckResult, DeploymentMismatch, compare_outputs
from wattwise.deploy._deployment import PRECISIONS, Deployment
from wattwise.deploy._export import (
    LoadedArtifact,
    export_deployment,
    hardware_description,
    load_artifact,
)
from wattwise.deploy._generation import (
    GENERATION_BACKENDS,
    GENERATION_PRECISIONS,
    Served,
    serve_for_generation,
)
from wattwise.deploy._prepare import Deployed, deploy, deploy_with
from wattwise.deploy._program import export_program
from wattwise.deploy._scenario import (
    SCENARIOS,
    CandidateResult,
    SelectionResult,
    offline_candidates,
    online_candidates,
    select_deployment,
)

if TYPE_CHECKING:
    from wattwise.deploy._runners import OrtModule, OvModule

__all__ = [
    "BACKENDS",
    "CALIBRATED_INT8",
    "GENERATION_BACKENDS",
    "GENERATION_PRECISIONS",
    "PRECISIONS",
    "SCENARIOS",
    "Availability",
    "Backend",
    "CandidateResult",
    "CheckResult",
    "Deployed",
    "Deployment",
    "DeploymentMismatch",
    "LoadedArtifact",
    "OrtModule",
    "OvModule",
    "SelectionResult",
    "Served",
    "compare_outputs",
    "deploy",
    "deploy_with",
    "export_deployment",
    "export_program",
    "hardware_description",
    "is_pt2e_quantized",
    "load_artifact",
    "offline_candidates",
    "online_candidates",
    "probe_backends",
    "select_deployment",
    "serve_for_generation",
]


# OrtModule and OvModule subclass nn.Module, so importing them imports torch; only do that
# when asked.
_LAZY: Lazy = {
    "OrtModule": ("wattwise.deploy._runners", "OrtModule"),
    "OvModule": ("wattwise.deploy._runners", "OvModule"),
}


def __getattr__(name: str) -> object:
    return load_lazy(__name__, _LAZY, name)


make_callable(__name__, deploy)  # ww.deploy(model, backend=...) calls deploy()
