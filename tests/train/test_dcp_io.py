"""train/dcp_io.py: sharded (DCP) checkpoints are read as metadata and tensors only.

The DCP directories here are written in one process (`no_dist=True`) with the tiny model's
state, laid out as a parallel.strategy=fsdp2 checkpoint is (sharded/ and hf/), so `unift
consolidate` and `unift convert-checkpoint` run on them without torchrun. The real 2-process
write, resume and consolidate are in test_sharding.py.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from unift.cli import main
from unift.train import checkpoint as ckpt
from unift.train.dcp_io import DCPRefused, load_tensors, read_metadata
from unift.train.plain_state import load_state


def save_dcp(state: dict, directory: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(directory), no_dist=True)


def sharded_checkpoint(tiny, root: Path, extra: dict | None = None, model_state: dict | None = None) -> Path:
    """checkpoints/step-000001 of a sharded run: sharded/ (model tensors), hf/ (config, tokenizer)."""
    model, tokenizer = tiny
    checkpoint = root / "checkpoints" / "step-000001"
    save_dcp({"model": model_state or dict(model.state_dict()), **(extra or {})}, checkpoint / "sharded")
    model.config.save_pretrained(checkpoint / "hf")
    tokenizer.save_pretrained(checkpoint / "hf")
    return checkpoint


def consolidate(checkpoint: Path, out: Path) -> tuple[int, str]:
    """`unift consolidate` as a user runs it: a process of its own, so every line it prints is seen."""
    result = subprocess.run([sys.executable, "-m", "unift", "consolidate", str(checkpoint), "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result.returncode, result.stderr.strip()


def test_consolidate_reads_a_clean_sharded_checkpoint(tiny, tmp_path):
    checkpoint = sharded_checkpoint(tiny, tmp_path)
    code, err = consolidate(checkpoint, tmp_path / "out")
    assert code == 0, err
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(weights["model.norm.weight"], tiny[0].state_dict()["model.norm.weight"])


def test_a_metadata_pickle_with_a_payload_runs_no_code(tiny, tmp_path, payload):
    checkpoint = sharded_checkpoint(tiny, tmp_path)
    marker = payload.marker
    (checkpoint / "sharded" / ".metadata").write_bytes(pickle.dumps(payload))
    code, err = consolidate(checkpoint, tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "is refused" in err and "posix.system" in err and ".metadata" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_payload_in_place_of_a_tensor_is_not_unpickled(tiny, tmp_path, payload):
    """A DCP 'bytes' entry (a pickle) where the model has a tensor: refused, never unpickled."""
    marker = payload.marker
    state = dict(tiny[0].state_dict())
    state["model.norm.weight"] = payload
    checkpoint = sharded_checkpoint(tiny, tmp_path, model_state=state)
    code, err = consolidate(checkpoint, tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "model.model.norm.weight is not a tensor" in err
    assert not marker.exists()


def test_a_tensor_file_with_a_payload_is_refused(tiny, tmp_path, payload):
    checkpoint = sharded_checkpoint(tiny, tmp_path)
    marker = payload.marker
    data = checkpoint / "sharded" / "__0_0.distcp"
    size = data.stat().st_size
    blob = pickle.dumps(payload)
    data.write_bytes(blob * (size // len(blob) + 1))  # every tensor slice starts inside a payload
    code, err = consolidate(checkpoint, tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1 and "is refused" in err, err
    assert "not a plain tensor" in err
    assert not marker.exists()


def test_a_metadata_pickle_cannot_patch_the_classes_it_may_name(tiny, tmp_path):
    """pickle's BUILD on a class (here pathlib.PurePosixPath.name, which the path check reads) would
    change it for the whole process: refused before it happens."""
    from pathlib import PurePosixPath

    checkpoint = sharded_checkpoint(tiny, tmp_path)
    # GLOBAL pathlib.PurePosixPath; state (None, {"name": "x"}); BUILD; STOP
    patch = b"cpathlib\nPurePosixPath\nN}\x8c\x04name\x8c\x01xs\x86b."
    (checkpoint / "sharded" / ".metadata").write_bytes(patch)
    with pytest.raises(DCPRefused, match="sets attributes of type PurePosixPath"):
        read_metadata(checkpoint / "sharded")
    assert PurePosixPath("a/b").name == "b"


def test_metadata_pointing_outside_the_directory_is_refused(tiny, tmp_path):
    checkpoint = sharded_checkpoint(tiny, tmp_path)
    path = checkpoint / "sharded" / ".metadata"
    metadata = pickle.loads(path.read_bytes())
    for info in metadata.storage_data.values():
        info.relative_path = "../../../etc/passwd"
    path.write_bytes(pickle.dumps(metadata))
    with pytest.raises(DCPRefused, match="not a file of the directory"):
        read_metadata(checkpoint / "sharded")
    with pytest.raises(DCPRefused):
        load_tensors({"model": dict(tiny[0].state_dict())}, checkpoint / "sharded", no_dist=True)


def test_a_legacy_sharded_checkpoint_converts(tiny, tmp_path, capsys):
    """0.1 wrote the optimizer's param_groups as pickled DCP entries and scheduler.pt, rng.pt."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = copy.deepcopy(tiny[0])  # the optimizer's set-up touches .grad: not the shared fixture
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    model_state, optim_state = get_state_dict(model, optimizer)
    checkpoint = sharded_checkpoint(tiny, tmp_path, {"optimizer": optim_state}, model_state=model_state)
    torch.save({"scheduler": scheduler.state_dict()}, checkpoint / "scheduler.pt")
    torch.save({"rng": ckpt.rng_state()}, checkpoint / "rng.pt")
    (checkpoint / "trainer_state.json").write_text('{"step": 1, "cursor": {"consumed": 4}}')
    (checkpoint / ckpt.MANIFEST).write_text(ckpt.manifest(checkpoint))

    assert main(["convert-checkpoint", str(checkpoint)]) == 0, capsys.readouterr().err
    saved = load_state(checkpoint / ckpt.OPTIMIZER)
    assert saved["param_groups"] == optim_state["param_groups"]
    assert saved["scheduler"] == scheduler.state_dict()
    assert ckpt.verify(checkpoint) and not (checkpoint / "scheduler.pt").exists()
    assert torch.equal(load_state(checkpoint / ckpt.RNG)["torch"], ckpt.rng_state()["torch"])
