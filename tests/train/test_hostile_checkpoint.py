"""A checkpoint from elsewhere cannot run code on resume, conversion or consolidation.

Each test writes files whose unpickling would run a shell command that creates a marker file
(conftest.Payload), re-signs the manifest (anyone who can write the files can write the
manifest), and checks that unift refuses with one line, without a traceback, and that the
marker never appears.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unift.config import load_config
from unift.errors import UserError
from unift.train import checkpoint as ckpt
from unift.train.loop import train
from unift.train.plain_state import load_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("UNIFT_TEST_KILL_AT", None)
SFT = ["model=tiny", "method=sft", "train.precision=fp32", "train.warmup_ratio=0", "train.schedule=constant",
       "train.batch_size=4", "train.micro_batch_size=4", "train.lr=3e-3", "data.max_response_tokens=16",
       "checkpoint.every=1", "checkpoint.keep_last=5", "log.progress=false", "log.tensorboard=false", "seed=3"]


def payload_bytes(payload) -> bytes:
    """A plain pickle whose loading runs the payload (conftest.Payload)."""
    return pickle.dumps({"optimizer": payload, "scheduler": payload, "rng": payload})


def torch_payload(payload, path: Path) -> None:
    """A torch.save file (zip with data.pkl) carrying the payload, as the issue's attack used."""
    torch.save({"optimizer": payload, "scheduler": payload, "rng": payload}, path)


def resign(directory: Path) -> None:
    (directory / ckpt.MANIFEST).write_text(ckpt.manifest(directory))
    assert ckpt.verify(directory)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unift", *args], env=ENV, capture_output=True, text=True, timeout=300)


def assert_one_line_refusal(result: subprocess.CompletedProcess, *words: str) -> str:
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("unift: error: ") and all(w in err for w in words), err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, countdown_jsonl) -> Path:
    """A 2-step tiny SFT run with a checkpoint per step (checkpoints/step-000001, step-000002)."""
    out = tmp_path_factory.mktemp("run") / "sft"
    train(load_config(None, SFT + [f"output_dir={out}", f"data.train={countdown_jsonl}", "train.steps=2"]))
    return out


def copy_run(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def resume_args(out: Path, data: Path, steps: int = 3) -> list[str]:
    return ["train", *SFT, f"output_dir={out}", f"data.train={data}", f"train.steps={steps}", "resume=true"]


def to_legacy(checkpoint: Path) -> None:
    """Rewrite a checkpoint as unift 0.1 wrote it: torch.save pickles instead of the state files."""
    state = load_state(checkpoint / ckpt.OPTIMIZER)
    torch.save({"optimizer": state["optimizer"], "scheduler": state["scheduler"]}, checkpoint / "optimizer.pt")
    torch.save({"rng": load_state(checkpoint / ckpt.RNG)}, checkpoint / "rng.pt")
    (checkpoint / ckpt.OPTIMIZER).unlink()
    (checkpoint / ckpt.RNG).unlink()
    resign(checkpoint)


def test_legacy_pickles_with_a_payload_are_refused_by_resume_and_by_convert(trained, tmp_path, countdown_jsonl,
                                                                            payload):
    out = copy_run(trained, tmp_path / "run")
    marker = payload.marker
    for step in ("step-000001", "step-000002"):
        checkpoint = out / "checkpoints" / step
        to_legacy(checkpoint)
        torch_payload(payload, checkpoint / "optimizer.pt")
        torch_payload(payload, checkpoint / "rng.pt")
        resign(checkpoint)

    err = assert_one_line_refusal(cli(*resume_args(out, countdown_jsonl)), "unift 0.1's format", "convert-checkpoint")
    assert "step-000002" in err
    assert not marker.exists()

    before = {p.name: p.read_bytes() for p in (out / "checkpoints" / "step-000002").iterdir() if p.is_file()}
    assert_one_line_refusal(cli("convert-checkpoint", str(out / "checkpoints" / "step-000002")),
                            "does not load as plain data", "optimizer.pt")
    assert not marker.exists()
    after = {p.name: p.read_bytes() for p in (out / "checkpoints" / "step-000002").iterdir() if p.is_file()}
    assert after == before  # a refused conversion leaves the checkpoint as it was


def test_every_file_of_a_checkpoint_replaced_by_a_payload_is_refused(trained, tmp_path, countdown_jsonl, payload):
    """Every file a payload (safetensors, JSON, tokenizer, ...) plus pickles where loaders might look."""
    out = copy_run(trained, tmp_path / "run")
    marker = payload.marker
    for step in ("step-000001", "step-000002"):
        checkpoint = out / "checkpoints" / step
        for path in checkpoint.rglob("*"):
            if path.is_file() and path.name != ckpt.MANIFEST:
                path.write_bytes(payload_bytes(payload))
        for extra in ("model/pytorch_model.bin", "model/training_args.bin", "optimizer.pt", "rng.pt"):
            torch_payload(payload, checkpoint / extra)
        resign(checkpoint)
    result = cli(*resume_args(out, countdown_jsonl))
    assert_one_line_refusal(result, "step-000002", "refused")
    assert not marker.exists()


def test_each_file_replaced_by_a_payload_runs_no_code(trained, tmp_path, countdown_jsonl, payload):
    """One file at a time: each is refused with one line, or (files resume does not read) ignored."""
    marker = payload.marker
    names = sorted(str(p.relative_to(trained / "checkpoints" / "step-000002"))
                   for p in (trained / "checkpoints" / "step-000002").rglob("*")
                   if p.is_file() and p.name != ckpt.MANIFEST)
    assert {"optimizer.safetensors", "rng.safetensors", "trainer_state.json", "model/model.safetensors"} <= set(names)
    outcomes = {}
    for i, name in enumerate(names):
        out = copy_run(trained, tmp_path / f"run{i}")
        checkpoint = out / "checkpoints" / "step-000002"
        (checkpoint / name).write_bytes(payload_bytes(payload))
        resign(checkpoint)
        cfg = load_config(None, SFT + [f"output_dir={out}", f"data.train={countdown_jsonl}", "train.steps=3",
                                       "resume=true"])
        try:
            train(cfg)
            outcomes[name] = "resumed"
        except UserError as exc:
            message = str(exc)
            assert len(message.splitlines()) == 1, message
            outcomes[name] = message
        assert not marker.exists(), name
    # the files that carry state are each refused, naming the file (the model's: its directory)
    for name in ("optimizer.safetensors", "rng.safetensors", "trainer_state.json", "model/model.safetensors",
                 "model/config.json"):
        named = str(Path("step-000002") / name) if "/" not in name else str(Path("step-000002") / "model")
        assert outcomes[name] != "resumed" and named in outcomes[name], (name, outcomes[name])
    print(outcomes)


def test_a_legacy_checkpoint_converts_and_resumes_to_the_same_weights(trained, tmp_path, countdown_jsonl):
    """0.1's files, converted, resume exactly as the checkpoint written today does."""
    today = copy_run(trained, tmp_path / "today")
    out = copy_run(trained, tmp_path / "legacy")
    checkpoint = out / "checkpoints" / "step-000002"
    to_legacy(checkpoint)
    assert_one_line_refusal(cli(*resume_args(out, countdown_jsonl)), "convert-checkpoint")

    result = cli("convert-checkpoint", str(checkpoint))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in checkpoint.iterdir()}
    assert {ckpt.OPTIMIZER, ckpt.RNG} <= names and not names & set(ckpt.LEGACY_FILES)
    assert ckpt.verify(checkpoint) and ckpt.OPTIMIZER in json.loads((checkpoint / ckpt.MANIFEST).read_text())

    for run in (today, out):
        result = cli(*resume_args(run, countdown_jsonl))
        assert result.returncode == 0, result.stderr
        assert "resumed from" in result.stdout and "step-000002" in result.stdout
    got, want = load_file(str(out / "final" / "model.safetensors")), load_file(str(today / "final" / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    moved = load_file(str(trained / "final" / "model.safetensors"))
    assert any(not torch.equal(got[k], moved[k]) for k in got)  # step 3 did train

    assert_one_line_refusal(cli("convert-checkpoint", str(checkpoint)), "nothing to convert")


def test_convert_refuses_a_checkpoint_with_symbolic_links(trained, tmp_path):
    """A link where convert writes (a temporary name) would write the user's files elsewhere."""
    out = copy_run(trained, tmp_path / "run")
    checkpoint = out / "checkpoints" / "step-000002"
    to_legacy(checkpoint)
    victim = tmp_path / "victim"
    (checkpoint / ".optimizer.safetensors.tmp").symlink_to(victim)
    assert_one_line_refusal(cli("convert-checkpoint", str(checkpoint)), "symbolic links")
    assert not victim.exists() and (checkpoint / "optimizer.pt").is_file()


@pytest.mark.parametrize("change", ["lr is text", "a moment of another shape", "another group count"])
def test_optimizer_state_that_does_not_fit_the_run_is_refused_at_resume(trained, tmp_path, countdown_jsonl, change):
    """Well-formed files, wrong contents: refused at resume (not a traceback at the first step)."""
    from unift.train.plain_state import save_state

    out = copy_run(trained, tmp_path / "run")
    checkpoint = out / "checkpoints" / "step-000002"
    state = load_state(checkpoint / ckpt.OPTIMIZER)
    groups, moments = state["optimizer"]["param_groups"], state["optimizer"]["state"]
    if change == "lr is text":
        groups[0]["lr"] = "x"
    elif change == "a moment of another shape":
        moments[0]["exp_avg"] = torch.zeros(3, 3)
    else:
        groups.append(dict(groups[0]))
    save_state(state, checkpoint / ckpt.OPTIMIZER)
    resign(checkpoint)
    with pytest.raises(UserError, match="optimizer.safetensors is refused") as excinfo:
        train(load_config(None, SFT + [f"output_dir={out}", f"data.train={countdown_jsonl}", "train.steps=3",
                                       "resume=true"]))
    assert len(str(excinfo.value).splitlines()) == 1
