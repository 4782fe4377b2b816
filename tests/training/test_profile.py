"""The step profile: the recipe's training step under each precision, thread count and memory
format, side by side in one process."""

from __future__ import annotations

from train_tasks import tiny

from wattwise.training._profile import profile_steps, step_variants
from wattwise.training._space import training_space


def test_every_step_setting_is_measured_side_by_side() -> None:
    task = tiny()
    space = training_space(task)
    variants = step_variants(space, space.default_params())
    assert variants[0] == space.default_params()
    assert len(variants) == len({str(sorted(v.items())) for v in variants})  # no repeats
    changed = {k for v in variants for k in v if v[k] != variants[0][k]}
    assert changed <= {"precision", "threads", "channels_last"} and "channels_last" in changed
    configs = [space.config(v).to_dict() for v in variants[:2]]
    got = profile_steps(task, configs, rounds=2, window_s=0.2)
    assert len(got["rows"]) == 2 and got["energy_j"] > 0 and got["time_s"] > 0
    assert got["energy_source"].startswith(("measured:", "estimated:"))
    for row, cfg in zip(got["rows"], configs, strict=True):
        assert row["config"] == cfg
        assert len(row["rounds_j_per_item"]) == 2 and row["j_per_item"] > 0
        assert row["s_per_item"] > 0
