"""The shared-prefix pass's layout: what cascade decode reads, eagerly and inside CUDA graphs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kernels.attention.triton_backend import shared_prefix_items


@st.composite
def groupings(draw):
    """A batch size, rows per item, and disjoint groups of two or more rows with lengths."""
    batch_size = draw(st.integers(1, 40))
    rows = draw(st.permutations(range(batch_size)))
    groups, at = [], 0
    while at + 2 <= batch_size and draw(st.booleans()):
        size = draw(st.integers(2, batch_size - at))
        groups.append((sorted(rows[at : at + size]), draw(st.integers(16, 5000))))
        at += size
    return batch_size, draw(st.integers(1, 21)), groups


@given(groupings())
def test_padded_layout_has_one_item_per_row_and_keeps_every_prefix(case):
    batch_size, per_item, groups = case
    items = shared_prefix_items(groups, batch_size, per_item, pad=True)
    assert len(items.q_counts) == batch_size  # the launch shape depends on the batch size only
    assert sorted(items.q_rows) == list(range(batch_size))  # every row once
    assert len(items.head_rows) == len(items.kv_lens) == batch_size
    assert all(0 <= c <= per_item for c in items.q_counts)
    group_of = {r: g for g, (rows, _) in enumerate(groups) for r in rows}
    at = 0
    for count, head, kv_len in zip(items.q_counts, items.head_rows, items.kv_lens):
        for r in items.q_rows[at : at + count]:
            if r in group_of:  # reads its group's prefix through a row of the same group
                assert group_of[head] == group_of[r] and kv_len == groups[group_of[r]][1]
            else:  # a lone row's shared part is empty
                assert kv_len == 0
        at += count


@given(groupings())
def test_eager_layout_lists_only_grouped_rows_in_bounded_items(case):
    batch_size, per_item, groups = case
    items = shared_prefix_items(groups, batch_size, per_item, pad=False)
    assert sorted(items.q_rows) == sorted(r for rows, _ in groups for r in rows)
    assert all(1 <= c <= per_item for c in items.q_counts)
    expected = sum(-(-len(rows) // per_item) for rows, _ in groups)
    assert len(items.q_counts) == expected  # each group read once per item of its rows
