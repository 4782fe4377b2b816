"""Compression passes and :func:`compress`.

A pass is a frozen, serialisable config bound to a registered handler; a recipe is a list of
passes, saved as YAML. :func:`compress` runs a recipe on a copy of a model and returns the
compressed model with a :class:`CompressionLog` (size, MACs, accuracy, time and the energy
each pass itself spent, with its source label).
"""

from wattwise.passes._base import (
    PASSES,
    CompressionLog,
    ModelStats,
    Pass,
    PassContext,
    PassRecord,
    register_handler,
    register_pass,
)
from wattwise.passes._compress import compress
from wattwise.passes._recipe import dump_recipe, load_recipe, parse_recipe, save_recipe
from wattwise.passes._sensitivity import allocate_ratios, layer_sensitivity
from wattwise.passes.attention import Attention
from wattwise.passes.distill import Distill
from wattwise.passes.prune import Prune
from wattwise.passes.quantize import Quantize
from wattwise.passes.sparsity import Sparsify

__all__ = [
    "PASSES",
    "Attention",
    "CompressionLog",
    "Distill",
    "ModelStats",
    "Pass",
    "PassContext",
    "PassRecord",
    "Prune",
    "Quantize",
    "Sparsify",
    "allocate_ratios",
    "compress",
    "dump_recipe",
    "layer_sensitivity",
    "load_recipe",
    "parse_recipe",
    "register_handler",
    "register_pass",
    "save_recipe",
]
