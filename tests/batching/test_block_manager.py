from __future__ import annotations

import pytest

from batching.block_manager import BlockManager
from batching.sequence import Sequence

BLOCKS_FOR = [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3)]


@pytest.mark.parametrize(("tokens", "blocks"), BLOCKS_FOR)
def test_blocks_for(tokens: int, blocks: int) -> None:
    assert BlockManager(10, 4).blocks_for(tokens) == blocks


def test_cover_grows_one_block_at_a_boundary_and_free_returns_them() -> None:
    bm = BlockManager(3, 4)
    seq = Sequence(0, [1] * 4, 8)
    bm.cover(seq)
    assert seq.block_table == [0] and bm.num_free_blocks == 2
    seq.append(9)
    assert bm.blocks_missing(seq) == 1 and bm.can_cover(seq) and not bm.can_cover(seq, reserve=2)
    bm.cover(seq)
    assert seq.block_table == [0, 1] and bm.usage == pytest.approx(2 / 3)
    bm.free(seq)
    assert seq.block_table == [] and bm.num_used_blocks == 0


def test_cover_refuses_more_than_is_free() -> None:
    bm = BlockManager(1, 2)
    with pytest.raises(RuntimeError, match="needs 2 blocks"):
        bm.cover(Sequence(0, [1, 2, 3], 4))


# -- prefix caching ------------------------------------------------------------------------------


def computed(bm: BlockManager, seq_id: int, tokens: list[int]) -> Sequence:
    """A sequence admitted and fully computed (as after its prefill), its blocks committed."""
    seq = Sequence(seq_id, list(tokens), 8)
    bm.allocate(seq)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    return seq


# (first prompt, second prompt, tokens the second finds cached): whole blocks of the same leading
# tokens only, and never the last token (its logits must be computed).
SHARED_PREFIXES = [
    ("same prompt: all but the block holding the last token", list(range(1, 10)), list(range(1, 10)), 8),
    ("a prompt of exactly two blocks recomputes its last one", [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], 4),
    ("a longer prompt with the same start", [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 20, 21], 8),
    ("a difference in the first block shares nothing", [1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 2, 3, 4, 5, 6, 7, 8, 9], 0),
    ("a difference in the second block shares the first", [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 0, 7, 8, 9], 4),
    ("a partial block is never shared", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7], 4),
    ("the same block after a different prefix is another block", [9, 9, 9, 9, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0], 0),
]


@pytest.mark.parametrize(("case", "first", "second", "cached"), SHARED_PREFIXES, ids=[c[0] for c in SHARED_PREFIXES])
def test_a_prompt_takes_the_cached_blocks_of_its_prefix(case: str, first: list[int], second: list[int],
                                                        cached: int) -> None:
    bm = BlockManager(16, 4)
    a = computed(bm, 0, first)
    b = Sequence(1, list(second), 8)
    free_before = bm.num_free_blocks
    bm.allocate(b)
    assert b.num_computed_tokens == cached, case
    assert b.block_table[: cached // 4] == a.block_table[: cached // 4]
    assert all(bm.ref_count(x) == 2 for x in b.block_table[: cached // 4])
    assert free_before - bm.num_free_blocks == bm.blocks_for(len(second)) - cached // 4  # shared: no new block


def test_blocks_are_registered_only_once_their_kv_is_computed() -> None:
    bm = BlockManager(16, 4)
    a = Sequence(0, list(range(1, 13)), 8)
    bm.allocate(a)
    a.num_computed_tokens = 5  # one block and one token of a chunked prefill
    bm.commit(a)
    b = Sequence(1, list(range(1, 13)), 8)
    assert len(bm.cached_prefix(b)) == 1 and bm.num_cached_blocks == 1


def test_freed_blocks_stay_cached_until_reused_least_recently_freed_first() -> None:
    bm = BlockManager(4, 2)
    a = computed(bm, 0, [1, 2, 3, 4, 5])  # blocks: [1,2] [3,4] hashed, [5] partial
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    again = Sequence(1, [1, 2, 3, 4, 6], 8)
    assert bm.blocks_to_allocate(again) == 3  # reviving counts: the cached blocks come off the free list
    bm.allocate(again)
    assert again.num_computed_tokens == 4 and bm.num_free_blocks == 1
    bm.free(again)
    # A new prompt of three blocks takes the unhashed one first, then evicts the tail of the old prefix.
    other = Sequence(2, [7, 7, 7, 7, 7], 8)
    bm.allocate(other)
    assert other.num_computed_tokens == 0 and bm.num_cached_blocks == 1
    assert len(bm.cached_prefix(Sequence(3, [1, 2, 3, 4, 5], 8))) == 1  # [1,2] survived, [3,4] evicted


def test_prefix_caching_off_shares_nothing() -> None:
    bm = BlockManager(16, 4, enable_prefix_caching=False)
    computed(bm, 0, list(range(9)))
    b = Sequence(1, list(range(9)), 8)
    bm.allocate(b)
    assert b.num_computed_tokens == 0 and bm.num_cached_blocks == 0


def test_hit_rate_counts_prompt_tokens() -> None:
    bm = BlockManager(16, 4)
    computed(bm, 0, list(range(9)))
    computed(bm, 1, list(range(9)))
    assert (bm.prefix_queries, bm.prefix_hits) == (18, 8)
