from unift.data.batching import Cursor, collate, epoch_order
from unift.data.render import PROMPT, TARGET, Rendered


def test_cursor_crosses_epochs_without_replay_or_skip():
    n, seed = 7, 3
    cursor, seen = Cursor(), []
    for _ in range(5):
        idx, cursor = cursor.take(3, n, seed)
        seen.extend(idx)
    assert cursor.consumed == 15
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:14]) == list(range(7))
    assert seen[:7] == epoch_order(n, seed, 0) and seen[7:14] == epoch_order(n, seed, 1)
    assert epoch_order(n, seed, 0) != epoch_order(n, seed, 1)


def test_cursor_resume_equals_uninterrupted():
    a, first = Cursor().take(4, 10, 0)
    b, _ = Cursor(first.consumed).take(4, 10, 0)
    full, _ = Cursor().take(8, 10, 0)
    assert a + b == full


def test_collate_pads_right_with_role_minus_one():
    batch = collate([Rendered([5, 6, 7], [PROMPT, TARGET, TARGET]), Rendered([8], [PROMPT])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.roles.tolist() == [[PROMPT, TARGET, TARGET], [PROMPT, -1, -1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
