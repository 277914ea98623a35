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
