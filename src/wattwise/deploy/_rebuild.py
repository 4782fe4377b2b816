"""Preparing a torch deployment again in another process (the measuring child), from what a
parent can send: the eager model pickled, or, when it doesn't pickle (PT2E graphs hold local
closures), its ``torch.export`` program, which is read back through the one ``.pt2`` loader
(:func:`wattwise.deploy._safe_load.program_from_bytes`) like any other archive."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from wattwise.deploy._base import BACKENDS
from wattwise.deploy._program import export_program_bytes
from wattwise.deploy._safe_load import program_from_bytes

if TYPE_CHECKING:
    from wattwise.deploy._deployment import Deployment

__all__ = ["Rebuild"]


class Rebuild:
    """Picklable zero-argument factory: prepares ``deployment`` of ``model`` again when called.

    Sends the eager model pickled when it pickles, else as ``torch.export`` bytes with a
    dynamic batch dimension (``example_input`` traces it).
    """

    def __init__(self, deployment: Deployment, model: Any, example_input: Any) -> None:
        self.deployment = deployment
        self.model_pickle: bytes | None = None
        self.model_pt2: bytes | None = None
        try:
            self.model_pickle = pickle.dumps(model)
        except Exception:
            self.model_pt2 = export_program_bytes(model, example_input)

    def __call__(self) -> Any:
        if self.model_pickle is not None:
            model = pickle.loads(self.model_pickle)  # our own bytes, made in the parent
        else:
            assert self.model_pt2 is not None
            program = program_from_bytes(self.model_pt2, "the deployment's torch.export program")
            model = program.module()
        backend = BACKENDS.get(self.deployment.backend)()
        return backend.prepare(model, self.deployment, example_input=(), calibration=[]).module
