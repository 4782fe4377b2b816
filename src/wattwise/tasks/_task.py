"""A task: a model factory, its data and its metric. Everything the loop needs to judge a model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wattwise._inputs import batch_size_of, call, check_input, primary_tensor, take_rows
from wattwise.errors import InputError
from wattwise.measure._generate import GenerateSpec

Metric = Callable[[nn.Module, DataLoader], float]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader`` (batches of ``(x, y)``).

    ``x`` may be a tensor, a tuple or a dict of tensors (:func:`wattwise._inputs.call`); the
    prediction is the argmax of the output's primary tensor (its logits, also inside a tuple
    or a Hugging Face ``ModelOutput``).
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            pred = primary_tensor(call(model, x)).argmax(dim=-1)
            correct += int((pred == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise InputError("the validation data is empty")
    return correct / total


@dataclasses.dataclass
class Task:
    """A model with its data and metric.

    Attributes:
        name: a short identifier (stored with every study; a study is bound to one task).
        model_factory: builds a fresh, untrained model of the task's architecture.
        train_data: a map-style dataset of ``(input, label)`` pairs; an input is a tensor, a
            tuple of tensors (positional arguments) or a dict of named tensors (keyword
            arguments, e.g. ``input_ids`` and ``attention_mask``).
        val_data: the held-out set the metric is computed on.
        example_input: a real input of batch size 1 (first dimension is the batch), in the
            same form and dtypes as the data's inputs; a larger batch is cut to its first row.
        metric: ``metric(model, loader) -> float``, higher is better (default: top-1 accuracy).
        loss_fn: training loss (default: cross-entropy).
        num_classes: for classification tasks; labels must lie in ``[0, num_classes)``.
        epochs, lr, batch_size: the recipe :meth:`fit` uses to train the baseline.
        collate_fn: how both loaders join items into a batch (default: torch's, which stacks
            equal shapes); text of varying length pads here, each batch to its longest item.
        generate: for a language model that generates, what one response is (a
            :class:`~wattwise.measure.GenerateSpec`): the search then measures generation
            (prefill and decode J/token, TBT) and deploys with the KV cache kept; ``None`` for
            a model judged one forward call at a time.

    Example:
        >>> task = Task("mine", make_model, train_ds, val_ds, example_input=torch.randn(1, 3, 32, 32))
        >>> model = task.fit(task.model_factory())
        >>> task.evaluate(model)
    """

    name: str
    model_factory: Callable[[], nn.Module]
    train_data: Dataset
    val_data: Dataset
    example_input: Any
    metric: Metric = accuracy
    loss_fn: LossFn = nn.functional.cross_entropy
    num_classes: int | None = None
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    collate_fn: Callable[[list[Any]], Any] | None = None
    generate: GenerateSpec | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise InputError("Task.name must be a non-empty string")
        if not callable(self.model_factory):
            raise InputError("Task.model_factory must be callable")
        for field in ("train_data", "val_data"):
            data = getattr(self, field)
            try:
                n = len(data)  # type: ignore[arg-type]
            except TypeError:
                raise InputError(f"Task.{field} must be a sized dataset") from None
            if n == 0:
                raise InputError(f"Task.{field} is empty")
        check_input(self.example_input, "Task.example_input")
        if batch_size_of(self.example_input) != 1:
            self.example_input = take_rows(self.example_input, 1)
        if self.collate_fn is not None and not callable(self.collate_fn):
            raise InputError("Task.collate_fn must be callable or None")
        if self.generate is not None and not isinstance(self.generate, GenerateSpec):
            raise InputError(
                f"Task.generate must be a GenerateSpec or None, got {type(self.generate).__name__}"
            )
        # epochs 0: the factory returns a trained (e.g. pretrained) model, used as it is.
        for field, low in (("epochs", 0), ("batch_size", 1)):
            if int(getattr(self, field)) < low:
                raise InputError(f"Task.{field} must be >= {low}, got {getattr(self, field)!r}")
        if not self.lr > 0:
            raise InputError(f"Task.lr must be > 0, got {self.lr!r}")

    def train_loader(self, batch_size: int | None = None, *, seed: int | None = None) -> DataLoader:
        """Shuffled training batches, reproducible for a given seed."""
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return DataLoader(
            self.train_data,
            batch_size=batch_size or self.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=self.collate_fn,
        )

    def val_loader(self, batch_size: int = 256) -> DataLoader:
        return DataLoader(
            self.val_data, batch_size=batch_size, shuffle=False, collate_fn=self.collate_fn
        )

    def calibration_batches(self, n_items: int = 256, batch_size: int = 32) -> list[Any]:
        """Inputs only, from the training set, for quantization calibration: each batch in
        the form the loader yields it (a tensor, a tuple or a dict of tensors)."""
        out: list[Any] = []
        seen = 0
        for x, _ in self.train_loader(batch_size, seed=self.seed + 1):
            out.append(x)
            seen += batch_size_of(x)
            if seen >= n_items:
                break
        return out

    def evaluate(self, model: nn.Module) -> float:
        """The task's metric on the validation set."""
        return float(self.metric(model, self.val_loader()))

    def fit(
        self,
        model: nn.Module,
        *,
        epochs: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        loss: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor] | None = None,
    ) -> nn.Module:
        """Train ``model`` in place with Adam and return it.

        ``loss(model, x, y)`` replaces the default ``loss_fn(model(x), y)``; distillation and
        quantization-aware fine-tuning plug in here.
        """
        seed = self.seed if seed is None else seed
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr or self.lr)
        n_epochs = self.epochs if epochs is None else epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, n_epochs))
        model.train()
        for epoch in range(n_epochs):
            for x, y in self.train_loader(seed=seed + epoch):
                opt.zero_grad(set_to_none=True)
                value = (
                    loss(model, x, y)
                    if loss is not None
                    else self.loss_fn(primary_tensor(call(model, x)), y)
                )
                if not torch.isfinite(value):
                    raise InputError(f"training loss became {float(value)} in epoch {epoch}")
                value.backward()
                opt.step()
            sched.step()
        model.eval()
        return model
