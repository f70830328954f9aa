"""`unift token-probs`: teacher-forced probabilities of reference tokens, checked against a direct
forward pass of the model."""

import json

import torch

from unift.cli import main
from unift.data.loading import load_examples
from unift.data.render import TARGET, render_sft
from unift.token_probs import reference_probs, summarise


def test_probs_match_a_plain_forward(tiny, countdown_jsonl):
    model, tokenizer = tiny
    model = model.float().eval()
    ex = load_examples(str(countdown_jsonl), limit=1)
    scored = reference_probs(model, tokenizer, ex)[0]
    r = render_sft(ex[0], tokenizer)
    with torch.no_grad():
        logits = model(torch.tensor([r.input_ids])).logits[0, :-1].float()
    probs = logits.softmax(-1)[torch.arange(len(r.input_ids) - 1), torch.tensor(r.input_ids[1:])]
    want = [p for p, role in zip(probs.tolist(), r.roles[1:]) if role == TARGET]
    assert torch.allclose(torch.tensor(scored["probs"]), torch.tensor(want), atol=1e-5)
    assert scored["tokens"][-1] == tokenizer.eos_token_id  # the target ends with the end token
    s = summarise([scored], tokenizer, top=3, min_count=1)
    assert s["end_token_mean_prob"] == scored["probs"][-1]
    assert [p["prob"] for p in s["lowest_positions"]] == sorted(scored["probs"])[:3]


def test_token_probs_command(tmp_path, countdown_jsonl, capsys):
    out = tmp_path / "tp"
    assert main(["token-probs", "--model", "tiny", "--model", "tiny", "--data", str(countdown_jsonl),
                 "--limit", "3", "--top", "4", "--out", str(out)]) == 0
    results = json.loads((out / "token_probs.json").read_text())
    assert list(results) == ["tiny"] and len(results["tiny"]["lowest_positions"]) == 4
    assert "end token mean p" in capsys.readouterr().out
