"""scripts/split_by_numbers.py: a mixed Countdown set's pass@1 split by chain length, per seed and per method."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "split_by_numbers.py"
_spec = importlib.util.spec_from_file_location("split_by_numbers", SCRIPT)
split_by_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split_by_numbers)


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_counts_solved_problems_by_how_many_numbers_each_row_has(tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    _write(data, [{"ground_truth": {"numbers": nums, "target": 1}} for nums in ([1, 2, 3], [1, 2, 3, 4], [5, 6, 7])])
    evals = tmp_path / "eval" / "mixed"
    # records come in any order; `row` names the data line; only reward 1.0 counts as solved
    _write(
        evals / "sft" / "seed0" / "records.jsonl",
        [{"row": 2, "reward": 1.0}, {"row": 1, "reward": 0.1}, {"row": 0, "reward": 1.0}],
    )
    _write(
        evals / "sft" / "seed1" / "records.jsonl",
        [{"row": 0, "reward": 0.0}, {"row": 1, "reward": 1.0}, {"row": 2, "reward": 0.0}],
    )
    assert split_by_numbers.main([str(data), str(evals)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "3 numbers 2/2  4 numbers 0/1" in out[0] and "seed0" in out[0]
    assert "3 numbers 0/2  4 numbers 1/1" in out[1] and "seed1" in out[1]
    assert out[2].split() == ["sft", "all", "3", "numbers", "2/4", "(50.0%)", "4", "numbers", "1/2", "(50.0%)"]


def test_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert split_by_numbers.main([str(tmp_path / "none.jsonl"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need a data file and an eval folder" in err[0]
