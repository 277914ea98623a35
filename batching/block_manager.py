"""KV cache bookkeeping in fixed-size blocks: which blocks are free and which a sequence holds.

No tensors here: the runner owns the cache and reads `Sequence.block_table` to address it.
"""

from __future__ import annotations

from collections import deque

from batching.sequence import Sequence

__all__ = ["BlockManager"]


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def blocks_missing(self, seq: Sequence) -> int:
        """Blocks `seq` still needs so that every one of its tokens has a KV slot."""
        return max(0, self.blocks_for(seq.num_tokens) - len(seq.block_table))

    def can_cover(self, seq: Sequence, reserve: int = 0) -> bool:
        return self.blocks_missing(seq) + reserve <= len(self._free)

    def cover(self, seq: Sequence) -> None:
        """Give `seq` blocks for all of its tokens (its whole prompt at admission, one more on decode)."""
        missing = self.blocks_missing(seq)
        if missing > len(self._free):
            raise RuntimeError(f"sequence {seq.seq_id} needs {missing} blocks, {len(self._free)} free")
        for _ in range(missing):
            seq.block_table.append(self._free.popleft())

    def free(self, seq: Sequence) -> None:
        # Recently freed blocks go to the back, so a block is reused as late as possible.
        self._free.extend(seq.block_table)
        seq.block_table = []
