"""A task: a model factory, its data and its metric. Everything the loop needs to judge a model."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wattwise._inputs import (
    batch_size_of,
    call,
    check_input,
    map_tensors,
    primary_tensor,
    take_rows,
    to_device,
)
from wattwise.errors import InputError
from wattwise.measure._generate import GenerateSpec
from wattwise.tasks._train_config import TrainConfig, scaled_lr

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
        train_config: how :meth:`fit` trains when it is given no config (``None``: the
            recipe above, fp32, all threads); ``optimize(training=...)`` sets it for the
            search's own fine-tunes.

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
    train_config: TrainConfig | None = None

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
        if self.train_config is not None and not isinstance(self.train_config, TrainConfig):
            raise InputError("Task.train_config must be a TrainConfig or None")
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
        config: TrainConfig | None = None,
        on_step: Callable[[int, int], bool] | None = None,
        on_epoch: Callable[[int, nn.Module], bool] | None = None,
    ) -> nn.Module:
        """Train ``model`` in place with Adam (cosine schedule over the epochs) and return it.

        Args:
            epochs, lr: override the recipe's (a fine-tune's own length and rate); an ``lr``
                given here is scaled to the config's batch size (:func:`scaled_lr`).
            loss: ``loss(model, x, y)`` replaces the default ``loss_fn(model(x), y)``;
                distillation and quantization-aware fine-tuning plug in here.
            config: how to train (batch size, precision, compile, threads, memory format);
                default :attr:`train_config`, and with neither, the task's own recipe.
            on_step: ``on_step(epoch, step)`` after every optimizer step; ``True`` stops the
                run there (a time or energy cap).
            on_epoch: ``on_epoch(epoch, model)`` after every epoch; ``True`` stops the run
                (early stopping at a target).
        """
        cfg = config if config is not None else (self.train_config or TrainConfig())
        seed = self.seed if seed is None else seed
        batch_size = cfg.batch_size or self.batch_size
        if lr is not None or cfg.lr is None:
            lr = scaled_lr(lr or self.lr, batch_size, self.batch_size)
        else:
            lr = cfg.lr
        n_epochs = epochs if epochs is not None else (cfg.epochs or self.epochs)
        torch.manual_seed(seed)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        memory_format = torch.channels_last if cfg.channels_last else None
        if memory_format is not None:
            model.to(memory_format=memory_format)  # type: ignore[call-overload]
        forward: nn.Module = torch.compile(model) if cfg.compile else model  # type: ignore[assignment]
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, n_epochs))
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        model.train()
        try:
            for epoch in range(n_epochs):
                for step, (x, y) in enumerate(self.train_loader(batch_size, seed=seed + epoch)):
                    x = _placed(x, device, memory_format)
                    y = y if device.type == "cpu" else to_device(y, device)
                    opt.zero_grad(set_to_none=True)
                    with _autocast(cfg.precision, device):
                        value = (
                            loss(forward, x, y)
                            if loss is not None
                            else self.loss_fn(primary_tensor(call(forward, x)), y)
                        )
                    if not torch.isfinite(value):
                        raise InputError(f"training loss became {float(value)} in epoch {epoch}")
                    value.float().backward()
                    opt.step()
                    if on_step is not None and on_step(epoch, step):
                        return model.eval()
                sched.step()
                if on_epoch is not None and on_epoch(epoch, model):
                    break
                model.train()
        finally:
            torch.set_num_threads(threads_before)
            if memory_format is not None:  # what comes back is laid out as it came in
                model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        model.eval()
        return model


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for the forward pass and the loss (weights and optimizer stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _placed(x: Any, device: torch.device, memory_format: torch.memory_format | None) -> Any:
    """A batch's inputs on the model's device, 4-D image batches in ``memory_format``."""
    x = to_device(x, device) if device.type != "cpu" else x
    if memory_format is None:
        return x
    return map_tensors(
        lambda t: t.contiguous(memory_format=memory_format) if t.dim() == 4 else t, x
    )
