"""Deployment: run a model on a backend × precision × batch × threads × device, check it
against eager fp32, pick the deployment that spends the least energy per item for a scenario,
and export it as a self-contained directory."""

from typing import TYPE_CHECKING

from wattwise._callable import make_callable
from wattwise.deploy import _ort  # noqa: F401  (registers the onnxruntime backend)
from wattwise.deploy._backends import (
    BACKENDS,
    Availability,
    Backend,
    export_program,
    is_pt2e_quantized,
    probe_backends,
)
from wattwise.deploy._deployment import (
    PRECISIONS,
    CheckResult,
    Deployed,
    Deployment,
    DeploymentMismatch,
    compare_outputs,
    deploy,
    deploy_with,
)
from wattwise.deploy._export import (
    LoadedArtifact,
    export_deployment,
    hardware_description,
    load_artifact,
)
from wattwise.deploy._scenario import (
    SCENARIOS,
    CandidateResult,
    SelectionResult,
    offline_candidates,
    online_candidates,
    select_deployment,
)

if TYPE_CHECKING:
    from wattwise.deploy._runners import OrtModule

__all__ = [
    "BACKENDS",
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
    "SelectionResult",
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
]


def __getattr__(name: str) -> object:
    # OrtModule subclasses nn.Module, so importing it imports torch; only do that when asked.
    if name == "OrtModule":
        from wattwise.deploy._runners import OrtModule

        return OrtModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


make_callable(__name__, deploy)  # ww.deploy(model, backend=...) calls deploy()
