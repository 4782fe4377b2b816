"""The candidate space, seeds, candidates, the model cache and settings: fast, no search run."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pytest
import search_tasks
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwise.errors import InputError
from wattwise.search import (
    Candidate,
    ModelChoice,
    SearchSettings,
    SearchSpace,
    default_space,
    load_space,
    seed_params,
)
from wattwise.search._objective import (
    JobContext,
    TaskRef,
    _get_model,
    _Ledger,
    _load_cached,
    model_key,
    task_id,
)
from wattwise.search._optimize import seed_budget
from wattwise.tasks import load_task


@pytest.fixture(scope="module")
def digits_task():
    return load_task("digits")


def test_default_space_offline_has_the_big_levers(digits_task):
    space = default_space(digits_task, "offline")
    names = [m.name for m in space.models]
    assert names == [
        "base",
        "prune30",
        "prune50",
        "distill-w0.5",
        "distill-w0.5+prune30",
        "distill-w0.25",
    ]
    # DigitsCNN takes width=, so the student is a half-width copy of the task's own model.
    student = space.model("distill-w0.5")
    assert student.student == "task(width=0.5)"
    assert student.passes[0]["epochs"] == digits_task.epochs
    assert space.model("distill-w0.25").student == "task(width=0.25)"
    assert space.model("prune50").passes[0]["sensitivity"] is True
    # Chained: the same student, then pruned by sensitivity (built on the cached student).
    chained = space.model("distill-w0.5+prune30").passes
    assert chained[0] == student.passes[0]
    assert chained[1]["type"] == "prune" and chained[1]["ratio"] == 0.3
    assert chained[1]["sensitivity"] is True
    assert "onnxruntime/int8" in space.deployments
    assert "eager/fp32" in space.deployments
    assert max(space.batch_sizes) == 256 and 1 in space.batch_sizes
    assert space.size == len(names) * len(space.deployments) * 4 * len(space.threads)


def test_online_space_is_batch_one_and_bad_scenario_is_refused(digits_task):
    online = default_space(digits_task, "online")
    assert online.batch_sizes == (1,)
    # One item per call: the smallest model on the runtime with the least overhead first.
    assert seed_params(online)[0] == {
        "model": "distill-w0.25",
        "deployment": "onnxruntime/fp32",
        "batch_size": 1,
        "threads": 1,
    }
    # Within the seeds a default online search of 8 trials runs: the baseline in OpenVINO's
    # int8 (its float layers in bf16 where the CPU has it), beside the students.
    seeds = seed_params(online)[: seed_budget(8)]
    assert {s["deployment"] for s in seeds if s["model"] == "base"} & {
        "openvino/int8",
        "openvino/int8-bf16",
    }
    assert any(s["model"] == "distill-w0.5" for s in seeds)
    with pytest.raises(InputError, match="scenario"):
        default_space(digits_task, "batch")


def test_seeds_lie_in_the_space_and_lead_with_int8(digits_task):
    space = default_space(digits_task, "offline")
    seeds = seed_params(space)
    assert len(seeds) >= 5
    assert all(space.contains(s) for s in seeds)
    assert len({json.dumps(s, sort_keys=True) for s in seeds}) == len(seeds)
    # The stack first: the student in OpenVINO's int8 at the largest batch, one thread.
    assert seeds[0] == {
        "model": "distill-w0.5",
        "deployment": "openvino/int8",
        "batch_size": 256,
        "threads": 1,
    }
    assert any(s["model"] == "distill-w0.25" for s in seeds)
    assert any(s["model"] == "distill-w0.5+prune30" for s in seeds)
    assert any(s["deployment"] == "compile/int8" for s in seeds)
    assert {
        "model": "base",
        "deployment": "openvino/int8",
        "batch_size": 256,
        "threads": 1,
    } in seeds
    # A space without those choices simply gets fewer seeds.
    small = SearchSpace((ModelChoice("base"),), ("eager/fp32",), (1, 8), (0,))
    assert seed_params(small) == [
        {"model": "base", "deployment": "eager/fp32", "batch_size": 8, "threads": 0}
    ]


def test_candidate_adds_pt2e_quantization_for_torch_int8_only(digits_task):
    space = default_space(digits_task, "offline")
    params = {"model": "prune50", "deployment": "compile/int8", "batch_size": 64, "threads": 1}
    cand = Candidate.from_params(space, params)
    assert [p["type"] for p in cand.recipe] == ["prune", "quantize"]
    assert cand.recipe[-1]["method"] == "pt2e-int8"
    assert cand.deployment == {
        "backend": "compile",
        "precision": "int8",
        "batch_size": 64,
        "threads": 1,
        "device": "cpu",
    }
    ort = Candidate.from_params(space, {**params, "deployment": "onnxruntime/int8", "threads": 0})
    assert [p["type"] for p in ort.recipe] == ["prune"]
    assert ort.threads is None
    with pytest.raises(InputError, match="not in the study's search space"):
        Candidate.from_params(space, {**params, "batch_size": 3})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"models": ()}, "models"),
        ({"deployments": ("eager/int4",)}, "deployments"),
        ({"deployments": ("nope/fp32",)}, "deployments"),
        ({"batch_sizes": (0,)}, "batch_sizes"),
        ({"threads": (-1,)}, "threads"),
        ({"batch_sizes": (1, 1)}, "batch_sizes"),
    ],
)
def test_space_validation_names_the_field(kwargs, field):
    base = {
        "models": (ModelChoice("base"),),
        "deployments": ("eager/fp32",),
        "batch_sizes": (1,),
        "threads": (0,),
    }
    with pytest.raises(InputError, match=f"SearchSpace.{field}"):
        SearchSpace(**{**base, **kwargs})


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.integers(1, 512), min_size=1, max_size=5, unique=True),
    threads=st.lists(st.integers(0, 8), min_size=1, max_size=3, unique=True),
    ratio=st.floats(0.05, 0.9),
)
def test_space_round_trips_through_json(batches, threads, ratio):
    space = SearchSpace(
        (ModelChoice("base"), ModelChoice("p", ({"type": "prune", "ratio": ratio},))),
        ("eager/fp32", "onnxruntime/int8"),
        tuple(batches),
        tuple(threads),
    )
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space
    assert again.fingerprint() == space.fingerprint()


class _Required(TypedDict):
    """``SearchSettings``' fields without a default, typed so that ``**ok`` type-checks."""

    task_spec: str | None
    task_name: str
    task_id: str
    scenario: str
    max_accuracy_drop: float
    latency_p90_ms: float | None
    trials: int
    space: SearchSpace


def _required(space: SearchSpace) -> _Required:
    """SearchSettings' fields without defaults, for an offline digits study."""
    return {
        "task_spec": "digits",
        "task_name": "digits",
        "task_id": "x",
        "scenario": "offline",
        "max_accuracy_drop": 0.01,
        "latency_p90_ms": None,
        "trials": 4,
        "space": space,
    }


def test_settings_validation_names_the_field(digits_task):
    ok = _required(default_space(digits_task, "offline"))
    assert SearchSettings.from_dict(SearchSettings(**ok).to_dict()) == SearchSettings(**ok)
    bad_values: tuple[tuple[str, Any], ...] = (
        ("max_accuracy_drop", 2.0),
        ("trials", 0),
        ("latency_p90_ms", -1.0),
        ("seed", -3),
        ("timeout_per_trial_s", 0),
    )
    for field, bad in bad_values:
        with pytest.raises(InputError, match=field):
            SearchSettings(**{**ok, field: bad})
    with pytest.raises(InputError, match="online"):
        SearchSettings(**(ok | {"scenario": "online"}))


def test_model_cache_round_trips_pruned_and_student_models(tmp_path):
    """A pruned model and a narrower student come back from a weights-only state dict file,
    computing the same outputs, and a second request is served from the cache."""
    task = search_tasks.tiny()
    ctx = JobContext(
        task=TaskRef("search_tasks:tiny"), task_id=task_id(task, "x"), cache_dir=str(tmp_path)
    )
    ledger = _Ledger("estimate", "cpu")
    prune = ({"type": "prune", "ratio": 0.5, "finetune_epochs": 0},)
    student = (
        {"type": "distill", "student": "task", "student_kwargs": {"width": 0.125}, "epochs": 1},
    )
    for passes in (prune, student):
        built, info = _get_model(ctx, task, passes, ledger)
        assert info["built"] == model_key(ctx, passes)
        path = tmp_path / "models" / f"{model_key(ctx, passes)}.pt"
        assert path.exists()
        # The file is tensors and plain data only: it loads with weights_only=True.
        assert set(torch.load(path, weights_only=True)) == {"format", "state_dict", "meta"}
        again = _load_cached(path, task, passes)
        x = torch.cat([task.example_input] * 3)
        with torch.no_grad():
            assert torch.allclose(built(x), again(x), atol=1e-6)
        assert sum(p.numel() for p in again.parameters()) < sum(
            p.numel() for p in task.model_factory().parameters()
        )
        _cached, info2 = _get_model(ctx, task, passes, ledger)
        assert info2 == {}
    # A chained recipe starts from the cached student: the same model as building the whole
    # recipe from the baseline, the student not trained again.
    chained = (*student, {"type": "prune", "ratio": 0.5, "finetune_epochs": 0})
    spent = ledger.energy_j["compress"]
    reused, info3 = _get_model(ctx, task, chained, ledger)
    assert info3["built"] == model_key(ctx, chained)
    from wattwise.passes import compress

    base, _ = _get_model(ctx, task, (), ledger)
    whole, _log = compress(base, [dict(p) for p in chained], task=task, seed=ctx.seed)
    x = torch.cat([task.example_input] * 3)
    with torch.no_grad():
        assert torch.allclose(reused(x), whole(x), atol=1e-6)
    assert ledger.energy_j["compress"] - spent < spent  # pruning only, no second distillation
    # Training the baseline and compressing were metered, with the meter's label.
    assert ledger.energy_j["train"] > 0 and ledger.energy_j["compress"] > 0
    assert ledger.source.startswith(("measured:", "estimated:"))
    ledger.close()


SPACE_YAML = """\
models:
  - {name: base}
  - {name: prune50, passes: [{type: prune, ratio: 0.5, finetune_epochs: 2}]}
deployments: &deps [onnxruntime/int8, eager/fp32]
batch_sizes: [1, 64]
"""


def test_load_space_reads_yaml_and_json_and_refuses_aliases(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML)  # an anchor with no alias is harmless and still read
    space = load_space(path)
    assert [m.name for m in space.models] == ["base", "prune50"]
    assert space.deployments == ("onnxruntime/int8", "eager/fp32") and space.threads == (0,)
    (tmp_path / "space.json").write_text(json.dumps(space.to_dict()))
    assert load_space(tmp_path / "space.json") == space
    path.write_text(SPACE_YAML + "threads: *deps\n")
    with pytest.raises(InputError, match=r"uses a YAML alias \(\*name\) at line 6"):
        load_space(path)
    path.write_text("a: " + "[" * 40 + "]" * 40 + "\n")
    with pytest.raises(InputError, match="nests deeper than 32 levels"):
        load_space(path)


def test_a_generative_task_gets_the_generation_space_and_seeds():
    from wattwise.tasks.tinylm import tinylm_task

    task = tinylm_task()
    space = default_space(task, "offline")
    assert [m.name for m in space.models] == [
        "base",
        "distill-w0.5-d0.5",
        "distill-w0.5",
        "distill-d0.5",
    ]
    assert space.model("distill-d0.5").student == "task(depth=0.5)"
    assert space.model("distill-w0.5-d0.5").student == "task(depth=0.5,width=0.5)"
    # Twice the teacher's epochs, half on its soft targets.
    assert all(
        m.passes[0]["alpha"] == 0.5 and m.passes[0]["epochs"] == 2 * task.epochs
        for m in space.models[1:]
    )
    # Only what keeps the KV cache: no exported graphs, no PT2E; nothing CUDA-only on a CPU.
    assert "compile/fp32" in space.deployments and "eager/int8-weight-only" in space.deployments
    assert not any(d.split("/")[0] in ("onnxruntime", "openvino") for d in space.deployments)
    assert not any("cudagraphs" in d or "int4" in d or "fp8" in d for d in space.deployments)
    assert space.batch_sizes == (1, 8, 32)
    seeds = seed_params(space, generative=True)
    assert seeds[0] == {
        "model": "base",
        "deployment": "compile/fp32",
        "batch_size": 32,
        "threads": 1,
    }
    assert all(space.contains(p) for p in seeds) and {p["threads"] for p in seeds} == {1}
    # The students compiled, the smallest first, among the six seeds a search of 10 starts with.
    assert [p["model"] for p in seeds[:6] if p["model"] != "base"] == [
        "distill-w0.5-d0.5",
        "distill-w0.5",
        "distill-d0.5",
    ]
    # A classifier's seeds are not the generative ones.
    assert seed_params(space)[0] != seeds[0]


def test_power_limits_are_a_choice_only_where_the_space_has_them(digits_task):
    plain = SearchSpace((ModelChoice("base"),), ("eager/bf16",), (1, 32))
    limited = SearchSpace((ModelChoice("base"),), ("eager/bf16",), (1, 32), (0,), (700, 560))
    # An existing study's space keeps its stored form and fingerprint.
    assert "power_limits_w" not in plain.to_dict()
    assert SearchSpace.from_dict(plain.to_dict()).fingerprint() == plain.fingerprint()
    assert SearchSpace.from_dict(limited.to_dict()) == limited
    assert limited.size == 2 * plain.size
    assert "power_limit_w" not in plain.choices()
    assert limited.choices()["power_limit_w"] == (700, 560)
    params = {"model": "base", "deployment": "eager/bf16", "batch_size": 32, "threads": 0}
    assert plain.contains(params) and not limited.contains(params)
    cand = Candidate.from_params(limited, {**params, "power_limit_w": 560}, device="cuda")
    assert cand.power_limit_w == 560 and cand.deployment["power_limit_w"] == 560
    assert cand.label.endswith(" 560W")
    assert "power_limit_w" not in Candidate.from_params(plain, params).deployment
    assert all(p["power_limit_w"] == 700 for p in seed_params(limited))
    with pytest.raises(InputError, match="power_limits_w"):
        SearchSpace((ModelChoice("base"),), ("eager/bf16",), (1,), (0,), (0,))
    # Without a GPU the default space has none.
    assert default_space(digits_task, "offline").power_limits_w == ()


def test_the_documented_example_space_loads_and_its_recipes_are_valid_passes():
    from pathlib import Path

    from wattwise.passes._recipe import passes_from_dicts

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "space.yaml"
    space = load_space(path)
    assert [m.name for m in space.models] == [
        "base",
        "prune40s",
        "student",
        "student-pruned",
        "guarded-int8",
    ]
    for model in space.models:
        passes_from_dicts([dict(p) for p in model.passes], where=model.name)
    # The chain's first pass is the student's own recipe: it builds on that cached model.
    assert space.model("student-pruned").passes[0] == space.model("student").passes[0]
    assert space.threads == (1, 0) and space.batch_sizes == (1, 64, 256)


class _NoWidth(torch.nn.Module):
    """A user's CNN whose factory takes no width."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize(("size", "student"), [(8, False), (32, True)])
def test_a_mobilenet_student_only_for_images_it_can_see(size, student):
    import dataclasses

    from wattwise.tasks import digits

    task = dataclasses.replace(digits(size=size), model_factory=_NoWidth)
    names = {m.name for m in default_space(task, "offline").models}
    assert ("distill-w0.5" in names) is student
    if student:
        name = default_space(task, "offline").model("distill-w0.5").student
        assert name is not None and name.startswith("mobilenetv3_small")


def test_a_training_config_is_a_fixed_setting_and_part_of_the_model_key(digits_task):
    from wattwise.tasks import TrainConfig

    base = _required(default_space(digits_task, "offline"))
    tuned = TrainConfig(batch_size=256, threads=1).to_dict()
    settings = SearchSettings(**base, training=tuned)
    assert SearchSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(InputError, match="unknown training config key"):
        SearchSettings(**base, training={"batch": 3})
    ctx = JobContext(TaskRef("digits"), "x", "/tmp/cache")
    with_config = JobContext(TaskRef("digits"), "x", "/tmp/cache", train_config=tuned)
    prune = ({"type": "prune", "ratio": 0.3},)
    assert model_key(ctx, ()) == model_key(with_config, ())  # the baseline: the recipe
    assert model_key(ctx, prune) != model_key(with_config, prune)


def test_token_seeds_lead_with_the_shallow_students_in_openvino_int8() -> None:
    def layers(keep: float) -> ModelChoice:
        distill = {"type": "distill", "student": "layers", "student_kwargs": {"keep": keep}}
        return ModelChoice(f"distill-layers{keep}", ({**distill, "epochs": 1},))

    space = SearchSpace(
        (ModelChoice("base"), layers(0.5), layers(0.34)),
        ("onnxruntime/int8-dynamic", "openvino/int8", "eager/fp32"),
        (1, 64),
        (0, 1),
    )
    seeds = seed_params(space)
    assert [(s["model"], s["deployment"], s["threads"]) for s in seeds[:3]] == [
        ("distill-layers0.34", "openvino/int8", 1),
        ("distill-layers0.5", "openvino/int8", 1),
        ("distill-layers0.5", "onnxruntime/int8-dynamic", 0),
    ]
    assert all(s["batch_size"] == 64 for s in seeds[:3])
