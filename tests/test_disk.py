"""unift.disk: a checkpoint or model that cannot fit is refused with one line, and a disk that
fills up mid-write gives the same line and leaves no temporary directory behind."""

import errno
import shutil
from collections import namedtuple

import pytest
import torch

from unift.disk import disk_full_is_user_error, require_space, state_bytes
from unift.errors import UserError

Usage = namedtuple("Usage", "total used free")


def test_state_bytes_counts_every_tensor_of_a_nested_state():
    state = {"a": torch.zeros(3, 4), "b": [torch.zeros(2, dtype=torch.bfloat16), {"c": torch.zeros(5, dtype=torch.int64)}],
             "step": 7, "name": "x"}
    assert state_bytes(state) == 3 * 4 * 4 + 2 * 2 + 5 * 8


def test_require_space_names_the_need_the_place_and_the_fix(tmp_path, monkeypatch):
    require_space(tmp_path, 1, "a model")  # this disk has a byte to spare
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 5 * 10**8, 5 * 10**8))
    with pytest.raises(UserError) as err:
        require_space(tmp_path, 2 * 10**9, "checkpoint step 3")
    message = str(err.value)
    assert "checkpoint step 3 needs about 2.00 GB" in message and "0.50 GB free" in message
    assert str(tmp_path) in message and "checkpoint.keep_last" in message and "\n" not in message


def test_only_a_full_disk_becomes_a_user_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="disk filled up while writing the model"):
        with disk_full_is_user_error(tmp_path, "the model"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):  # any other failure stays what it is
        with disk_full_is_user_error(tmp_path, "the model"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(RuntimeError):  # torch.save's message, with space left: not a full disk
        with disk_full_is_user_error(tmp_path, "the model"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12, 0))
    with pytest.raises(UserError, match="disk filled up"):  # ... and with none left: a full disk
        with disk_full_is_user_error(tmp_path, "the model"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def _checkpoint(tiny, out):
    from unift.train.checkpoint import save_checkpoint

    model, tokenizer = tiny
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return save_checkpoint(out, 1, model, tokenizer, optimizer, scheduler, {"step": 1}, "{}\n")


def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(UserError, match="checkpoint step 1 needs about"):
        _checkpoint(tiny, tmp_path)
    assert list(tmp_path.rglob("*")) == []  # not even the checkpoints directory


def test_a_disk_filling_up_mid_checkpoint_leaves_nothing_half_written(tiny, tmp_path, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    from unift.train import checkpoint

    monkeypatch.setattr(checkpoint, "save_state", full_disk)  # the optimizer file, after the model was written
    with pytest.raises(UserError, match="disk filled up while writing checkpoint step 1"):
        _checkpoint(tiny, tmp_path)
    assert list((tmp_path / "checkpoints").iterdir()) == []
    monkeypatch.undo()
    assert (_checkpoint(tiny, tmp_path) / "optimizer.safetensors").is_file()  # with room again, it is written
