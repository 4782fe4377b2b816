"""Models as a stranger to wattwise writes them, for measuring through the real CLI.

Nothing here is shaped for wattwise: a text classifier takes a Hugging Face style dict of token
ids and a mask, an encoder takes ids alone and says nothing of its input, and a tabular MLP
reads sklearn's breast-cancer features. The tests compute each model's MACs by hand from the
sizes below.

    python -m wattwise measure tests.inputs.stranger_models:factory --json
    python -m wattwise measure tests.inputs.stranger_models:ids_encoder --input-shape 1,24 --input-dtype int64
    python -m wattwise measure --task tests.inputs.stranger_models:cancer_task
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

# (a) the text classifier
VOCAB = 1000
D_MODEL = 32
HEADS = 4
FF = 64
LAYERS = 2
SEQ = 20
REAL_TOKENS = 16  # the example sentence: 16 tokens, then 4 of padding
CLASSES = 3

# (b) the ids-only encoder
IDS_VOCAB = 500
IDS_D = 32
IDS_FF = 64
IDS_CLASSES = 4

# (c) the breast-cancer MLP
CANCER_FEATURES = 30
CANCER_HIDDEN = 64


class TextClassifier(nn.Module):
    """A 2-layer transformer encoder over token ids, mean-pooled over the real tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.position = nn.Parameter(torch.zeros(1, 64, D_MODEL))
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, dim_feedforward=FF, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS)
        self.head = nn.Linear(D_MODEL, CLASSES)
        ids = torch.randint(1, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(1, SEQ, dtype=torch.long)
        mask[:, REAL_TOKENS:] = 0
        ids[:, REAL_TOKENS:] = 0  # the padding id
        self.example_input = {"input_ids": ids, "attention_mask": mask}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.position[:, : input_ids.shape[1]]
        h = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        keep = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.head(pooled)


def factory() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier()


class IdsEncoder(nn.Module):
    """Token ids in, class scores out; no example input, no input size."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(IDS_VOCAB, IDS_D)
        self.layer = nn.TransformerEncoderLayer(
            IDS_D, 2, dim_feedforward=IDS_FF, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(IDS_D, IDS_CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(ids)).mean(1))


def ids_encoder() -> IdsEncoder:
    torch.manual_seed(0)
    return IdsEncoder()


def _cancer_data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


class CancerMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(CANCER_FEATURES, CANCER_HIDDEN), nn.ReLU(), nn.Linear(CANCER_HIDDEN, 2)
        )
        self.example_input = _cancer_data()[0][:1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def cancer_mlp() -> CancerMLP:
    torch.manual_seed(0)
    return CancerMLP()


def cancer_task():  # a wattwise Task, built as its docstring shows
    from torch.utils.data import TensorDataset

    from wattwise.tasks import Task

    x, y = _cancer_data()
    return Task(
        "breast-cancer",
        cancer_mlp,
        TensorDataset(x[:400], y[:400]),
        TensorDataset(x[400:], y[400:]),
        example_input=x[:1],
        num_classes=2,
        epochs=3,
    )


# A text task: sentences of varying length whose class is which third of the vocabulary most
# of their ids come from; the loaders pad each batch to its longest sentence.


class Sentences(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            label = int(torch.randint(0, CLASSES, (1,), generator=gen))
            length = int(torch.randint(4, SEQ + 1, (1,), generator=gen))
            third = (VOCAB - 1) // CLASSES
            ids = 1 + label * third + torch.randint(0, third, (length,), generator=gen)
            self.items.append((ids, label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def pad_batch(
    items: list[tuple[torch.Tensor, int]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    longest = max(len(ids) for ids, _ in items)
    ids = torch.zeros(len(items), longest, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for row, (seq, _) in enumerate(items):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    labels = torch.tensor([label for _, label in items])
    return {"input_ids": ids, "attention_mask": mask}, labels


def text_task():
    from wattwise.tasks import Task

    train, val = Sentences(240, seed=0), Sentences(60, seed=1)
    example, _ = pad_batch([train[0]])
    return Task(
        "sentences",
        factory,
        train,
        val,
        example_input=example,
        num_classes=CLASSES,
        epochs=4,
        lr=3e-3,
        batch_size=16,
        collate_fn=pad_batch,
    )
