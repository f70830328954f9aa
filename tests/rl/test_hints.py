"""UFT hints: chunk cut points, hint text, schedules, sampling, adaptive per-prompt hints."""

import json
import math
import random

import pytest

from unift.rl.hints import (
    AdaptiveHints,
    chunk_cuts,
    cosine_hint_fraction,
    hint_for,
    num_chunks,
    official_stage_chunks,
    revealed_pieces,
    sample_chunks_binomial,
    sample_chunks_uniform,
    staged_hint_fraction,
    with_answer_piece,
)


@pytest.mark.parametrize("pieces, cuts", [
    (3, [0, 1, 2, 3]),               # fewer than 5 pieces: one piece per chunk
    (5, [0, 1, 2, 3, 4, 5]),
    (7, [0, 1, 3, 4, 6, 7]),         # 1.4, 2.8, 4.2, 5.6
    (12, [0, 2, 5, 7, 10, 12]),      # 2.4, 4.8, 7.2, 9.6
    (1, [0, 1]),
    (0, [0]),
])
def test_chunk_cuts(pieces, cuts):
    assert chunk_cuts(pieces) == cuts


def test_chunk_cuts_rounding():
    # max_chunks 5: never a tie, so half-even (official Python round) == half-up
    for length in range(1, 300):
        num = min(5, length)
        assert chunk_cuts(length) == [math.floor(k * length / num + 0.5) for k in range(num + 1)]
    # an even max_chunks can tie: 6 pieces in 4 chunks -> 1.5, 3, 4.5 -> round half to even: 2, 3, 4
    assert chunk_cuts(6, max_chunks=4) == [0, 2, 3, 4, 6]


def test_hint_for_and_num_chunks():
    countdown = ["19 + 35 = 54\n", "44 + 54 = 98\n", "Therefore, the final equation is 44 + (19 + 35)"]
    assert num_chunks(countdown) == 3
    assert hint_for(countdown, 0) == ""
    assert hint_for(countdown, 2) == "19 + 35 = 54\n44 + 54 = 98\n"
    assert hint_for(countdown, 3) == "".join(countdown)
    seven = [f"s{i}. " for i in range(7)]
    assert num_chunks(seven) == 5
    assert hint_for(seven, 2) == "s0. s1. s2. "
    assert hint_for(seven, 4) == "".join(seven[:6])
    assert revealed_pieces(12, 3) == 7
    assert hint_for([], 0) == ""
    with pytest.raises(ValueError):
        hint_for(countdown, 4)


def test_cosine_schedule():
    # step = completed optimizer steps (0-based); the formula's t = step + 1 (official code)
    p = cosine_hint_fraction
    assert p(0) == pytest.approx(0.05 + 0.45 * (1 + math.cos(math.pi / 300)))
    assert p(0) == pytest.approx(0.95, abs=1e-4)
    assert p(149) == pytest.approx(0.5)          # t = T_hint / 2
    assert p(299) == pytest.approx(0.05)         # t = T_hint: last hinted update
    assert p(300) == 0.0 and p(499) == 0.0       # t = T_hint + 1 on: pure RL
    assert p(9, p_high=1.0, p_low=0.0, t_hint=20) == pytest.approx(0.5)
    assert all(p(s) >= p(s + 1) for s in range(400))


def test_staged_schedules():
    stages = [(0, 1.0), (100, 0.5), (200, 0.0)]
    assert [staged_hint_fraction(s, stages) for s in (0, 99, 100, 199, 200, 10_000)] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        staged_hint_fraction(0, [(5, 1.0)])
    # official "stage": 5 chunks, T_hint 300 -> one chunk less every 50 updates (t = step + 1)
    assert [official_stage_chunks(s, 5) for s in (0, 48, 49, 99, 248, 249, 299, 300)] == [5, 5, 4, 3, 1, 0, 0, 0]
    # 3 chunks: every 300 // 4 = 75 updates
    assert [official_stage_chunks(s, 3) for s in (73, 74, 149, 224, 299)] == [3, 2, 1, 0, 0]
    assert official_stage_chunks(0, 0) == 0


def test_binomial_sampling():
    rng = random.Random(0)
    draws = [sample_chunks_binomial(rng, 5, 0.3) for _ in range(20_000)]
    assert sum(draws) / len(draws) == pytest.approx(1.5, abs=0.03)           # num * p
    var = sum((d - 1.5) ** 2 for d in draws) / len(draws)
    assert var == pytest.approx(5 * 0.3 * 0.7, abs=0.05)                    # num * p * (1 - p)
    assert set(draws) <= set(range(6))
    assert sample_chunks_binomial(rng, 5, 0.0) == 0 and sample_chunks_binomial(rng, 5, 1.0) == 5
    assert sample_chunks_binomial(random.Random(7), 5, 0.4) == sample_chunks_binomial(random.Random(7), 5, 0.4)
    with pytest.raises(ValueError):
        sample_chunks_binomial(rng, 5, 1.5)


def test_uniform_sampling():
    rng = random.Random(1)
    draws = [sample_chunks_uniform(rng, 4) for _ in range(10_000)]
    assert set(draws) == set(range(5))
    assert sum(draws) / len(draws) == pytest.approx(2.0, abs=0.05)
    assert sample_chunks_uniform(rng, 0) == 0


def run_staircase(hints, pid, num, success_at, steps):
    levels = []
    for _ in range(steps):
        k = hints.choose(pid, num)
        hints.update(pid, k, success_at(k))
        levels.append(k)
    return levels


def test_adaptive_moves_toward_target():
    hints = AdaptiveHints(target=0.5, alpha=0.5)
    # success rate grows with the hint: c / 5. Start full (1.0 > .5) -> 4 (.8) -> 3 (.6) -> 2 (.4 < .5)
    # -> 3 (ema .6) -> 2 (ema .4) ... oscillates around the 50% point
    levels = run_staircase(hints, "p", 5, lambda c: c / 5, 12)
    assert levels[:5] == [5, 4, 3, 2, 3]
    assert set(levels[3:]) == {2, 3}
    # a prompt never solved keeps the full hint; one always solved loses it entirely
    assert run_staircase(hints, "hard", 5, lambda c: 0.0, 5) == [5] * 5
    assert run_staircase(hints, "easy", 5, lambda c: 1.0, 8) == [5, 4, 3, 2, 1, 0, 0, 0]
    # starting without a hint, a failing prompt gains one chunk per step
    none_first = AdaptiveHints(start_fraction=0.0)
    assert run_staircase(none_first, 3, 4, lambda c: 0.0, 6) == [0, 1, 2, 3, 4, 4]


def test_adaptive_ema_tolerance_and_limit():
    hints = AdaptiveHints(target=0.5, alpha=0.25, tolerance=0.1)
    assert hints.choose(1, 5) == 5
    hints.update(1, 5, 0.55)                       # within tolerance: stay
    assert hints.choose(1, 5) == 5
    hints.update(1, 5, 1.0)                        # ema .75 * .55 + .25 * 1 = .6625 > .6: shorter
    assert hints.choose(1, 5) == 4
    assert hints.choose(1, 5, limit=2) == 2 and hints.choose(1, 5, limit=0) == 0
    hints.update(1, 2, 0.0)                        # moves relative to what was used
    assert hints.choose(1, 5) == 3
    with pytest.raises(KeyError):
        hints.update("unseen", 1, 0.5)


def test_adaptive_population_start_adapts_a_single_pass():
    # every step brings 4 prompts never seen before (each prompt is seen once, as in a 20-step study run
    # over 2,000 problems); a prompt of 4 chunks is solved with 2 or more chunks, not with fewer
    hints = AdaptiveHints(target=0.5, alpha=0.5)
    firsts = []
    for step in range(8):
        ids = [f"s{step}p{i}" for i in range(4)]
        chosen = [hints.choose(pid, 4) for pid in ids]
        assert len(set(chosen)) == 1
        firsts.append(chosen[0])
        hints.update_step([(pid, k, 1.0 if k >= 2 else 0.0) for pid, k in zip(ids, chosen)])
    # full, then one chunk less per step while solved, then around the 2-chunk threshold: not full forever
    assert firsts == [4, 3, 2, 1, 2, 1, 2, 1]
    assert hints.summary()["population_fraction"] == pytest.approx(0.5)
    # prompts without chunks do not move the population start
    hints.choose("bare", 0)
    hints.update_step([("bare", 0, 1.0)])
    assert hints.population_fraction == pytest.approx(0.5)


def test_adaptive_state_round_trip_and_summary():
    hints = AdaptiveHints()
    run_staircase(hints, "a", 5, lambda c: 1.0, 3)      # levels 5, 4, 3 -> now 2
    run_staircase(hints, 7, 3, lambda c: 0.0, 1)         # stays 3 of 3
    hints.choose("fresh", 0)                             # no pieces at all
    state = json.loads(json.dumps(hints.state_dict()))
    restored = AdaptiveHints()
    restored.load_state_dict(state)
    assert restored.state_dict() == hints.state_dict()
    assert restored.choose("a", 5) == 2 and restored.choose(7, 3) == 3 and restored.choose("7", 3) == 3
    s = hints.summary()
    assert s["prompts"] == 3
    assert s["mean_chunk_fraction"] == pytest.approx((2 / 5 + 3 / 3) / 2)
    assert s["mean_chunks"] == pytest.approx(5 / 3)
    assert s["frac_no_hint"] == pytest.approx(1 / 3)
    assert s["mean_success_ema"] == pytest.approx(0.0)   # only prompt 7 has an ema at its level (0.0)
    assert AdaptiveHints().summary()["mean_chunk_fraction"] == 0.0
    # the population start survives the round trip; a version-1 state (none saved) starts unseen prompts full
    hints.update_step([("a", 2, 1.0)])
    restored = AdaptiveHints()
    restored.load_state_dict(json.loads(json.dumps(hints.state_dict())))
    assert restored.population_fraction == pytest.approx(1 / 5) and restored.choose("new", 5) == 1
    old = {k: v for k, v in hints.state_dict().items() if k != "population_fraction"} | {"version": 1}
    restored.load_state_dict(old)
    assert restored.population_fraction == 1.0 and restored.choose("newer", 5) == 5
    with pytest.raises(ValueError):
        restored.load_state_dict(old | {"version": 3})


def test_with_answer_piece():
    pieces = ["1 + 2 = 3\n", "Therefore, the final equation is 1 + 2"]
    completion = "1 + 2 = 3\nTherefore, the final equation is 1 + 2 </think>\n<answer> 1 + 2 </answer>"
    full = with_answer_piece(pieces, completion)
    assert full == [*pieces, " </think>\n<answer> 1 + 2 </answer>"]
    assert hint_for(full, num_chunks(full)) == completion               # a full hint is the reference
    assert with_answer_piece(pieces, "something else") == pieces         # not a continuation: unchanged
    assert with_answer_piece(pieces, None) == pieces
    assert with_answer_piece(pieces, "".join(pieces)) == pieces          # nothing left to add
