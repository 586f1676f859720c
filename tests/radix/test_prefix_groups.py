"""Cascade groups read off the radix tree: who shares what, and the grouping that saves most."""

from __future__ import annotations

import torch

from radix import RadixCache, shared_prefix_groups


def _node(tree: RadixCache, tokens: list[int]):
    """Inserts `tokens` (if new) and returns the node where they end, as a request holds it."""
    tree.insert(tokens, torch.arange(len(tokens)) + 1000 * len(tokens))
    return tree.match_prefix(tokens)[1]


def test_rows_under_one_prefix_form_one_group():
    tree = RadixCache()
    system = list(range(100))
    nodes = [_node(tree, system + [500 + i, 600 + i]) for i in range(4)]
    assert shared_prefix_groups(nodes, 16) == [([0, 1, 2, 3], 100)]


def test_short_prefixes_and_lone_rows_stay_ungrouped():
    tree = RadixCache()
    a = _node(tree, list(range(10)) + [1])
    b = _node(tree, list(range(10)) + [2])  # shares only 10 tokens
    c = _node(tree, [77] * 40)  # shares nothing
    assert shared_prefix_groups([a, b, c, None], 16) == []
    assert shared_prefix_groups([a, b, c, None], 8) == [([0, 1], 10)]


def test_the_grouping_that_saves_most_reads_wins():
    tree = RadixCache()
    root = list(range(1000))
    # rows 0-5 share 1000 tokens; rows 0-1 and 2-3 also share 50 more each.
    nodes = [_node(tree, root + [2000 + i // 2] * 50 + [3000 + i]) for i in range(4)]
    nodes += [_node(tree, root + [4000 + i]) for i in range(2)]
    # one group of six saves 5 * 1000 reads; pairs of 1050 would save only 2 * 1050 + 1000
    assert shared_prefix_groups(nodes, 16) == [([0, 1, 2, 3, 4, 5], 1000)]

    tree = RadixCache()
    short = list(range(20))
    # rows 0-3 share 20 tokens; 0-1 and 2-3 share 500 more: two deep groups beat one shallow
    nodes = [_node(tree, short + [100 + i // 2] * 500 + [900 + i]) for i in range(4)]
    assert shared_prefix_groups(nodes, 16) == [([0, 1], 520), ([2, 3], 520)]


def test_groups_follow_node_splits():
    """A later insert that splits a held node's edge leaves the holders' paths intact."""
    tree = RadixCache()
    a = _node(tree, list(range(64)) + [1])
    b = _node(tree, list(range(64)) + [2])
    _node(tree, list(range(32)) + [9])  # splits the shared edge at 32
    assert shared_prefix_groups([a, b], 16) == [([0, 1], 64)]
