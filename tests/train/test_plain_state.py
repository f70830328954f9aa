"""train/plain_state.py: training state round-trips exactly, and nothing but data is read back."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from unift.train.checkpoint import rng_state
from unift.train.plain_state import StateFileError, load_state, save_state


def stepped_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    groups = [{"params": [model[0].weight]}, {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def test_optimizer_and_scheduler_round_trip_exactly(tmp_path):
    optimizer, scheduler = stepped_optimizer()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["scheduler"] == state["scheduler"]
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert isinstance(back["optimizer"]["param_groups"][0]["betas"], tuple)
    assert back["optimizer"]["state"].keys() == state["optimizer"]["state"].keys() == {0, 1, 2, 3}
    for pid, moments in state["optimizer"]["state"].items():
        for name, value in moments.items():
            got = back["optimizer"]["state"][pid][name]
            assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value)
    fresh, fresh_scheduler = stepped_optimizer()
    fresh.load_state_dict(back["optimizer"])
    fresh_scheduler.load_state_dict(back["scheduler"])
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_rng_state_round_trips_to_the_same_draws(tmp_path):
    random.seed(11), np.random.seed(12), torch.manual_seed(13)
    random.random(), np.random.randn(), torch.randn(1)  # numpy's cached gaussian is part of the state
    save_state(rng_state(), tmp_path / "rng.safetensors")
    want = (random.random(), np.random.randn(3).tolist(), torch.randn(3).tolist())
    from unift.train.checkpoint import set_rng_state

    set_rng_state(load_state(tmp_path / "rng.safetensors"))
    assert (random.random(), np.random.randn(3).tolist(), torch.randn(3).tolist()) == want


def test_keys_that_look_like_markers_and_odd_values_survive(tmp_path):
    state = {"$tensor": "not a tensor", 1: (2, [3.5, None]), "inf": float("inf"), "big": 2**80,
             "empty": torch.zeros(0), "scalar": torch.tensor(7, dtype=torch.int64), "bf16": torch.ones(2, dtype=torch.bfloat16)}
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["$tensor"] == "not a tensor" and back[1] == (2, [3.5, None]) and back["inf"] == float("inf")
    assert back["big"] == 2**80 and back["scalar"].item() == 7 and back["bf16"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state({"x": object()}, tmp_path / "t.safetensors")


@pytest.mark.parametrize("content", ["pickle", "torch.save", "safetensors of another format", "bad marker",
                                     "missing tensor", "bad array dtype", "not json", "dtype not a string",
                                     "unhashable key", "deep nesting"])
def test_anything_but_a_state_file_is_refused_and_runs_nothing(tmp_path, content, payload):
    path = tmp_path / "s.safetensors"
    if content == "pickle":
        path.write_bytes(pickle.dumps(payload))
    elif content == "torch.save":
        torch.save({"optimizer": payload}, path)
    elif content == "safetensors of another format":
        save_file({"w": torch.ones(2)}, str(path))
    else:
        tree = {"bad marker": {"$eval": "__import__('os')"}, "missing tensor": {"$tensor": "t9"},
                "bad array dtype": {"$ndarray": [1], "dtype": "object", "shape": [1]},
                "dtype not a string": {"$ndarray": [1], "dtype": ["uint32"], "shape": [1]},
                "unhashable key": {"$dict": [[{"$tuple": [[1]]}, 0]]}}.get(content)
        header = {"not json": "{not json", "deep nesting": "[" * 100_000 + "]" * 100_000}.get(content)
        header = header or json.dumps(tree)
        save_file({"t0": torch.ones(1)}, str(path), metadata={"format": "unift-state/1", "tree": header})
    with pytest.raises(StateFileError):
        load_state(path)
    assert not payload.marker.exists()
