"""KV cache bookkeeping in fixed-size blocks: which blocks are free, which a sequence holds, and which
hold a known prefix (prefix caching).

No tensors here: the runner owns the cache and reads `Sequence.block_table` to address it.

Prefix caching (after vLLM): once every token of a full block has its KV computed, the block is
registered under a hash chained over the whole prefix up to it (`Sequence.block_hashes`). A new
sequence whose prompt starts with the same tokens takes those blocks instead of recomputing them;
a block is shared by reference count and never written again (only a sequence's last, partly filled
block is written, and that one is never shared). A freed block keeps its content and hash until it is
reused: free blocks are handed out least recently freed first, blocks without a hash before any, so
the cache holds the most recent prefixes that fit in the memory nobody is using.
"""

from __future__ import annotations

from collections import OrderedDict

from batching.sequence import Sequence

__all__ = ["BlockManager"]


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._refs = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...]] = [()] * num_blocks  # a hashed block's tokens, checked on a hit
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # front is reused first
        self._cached: dict[int, int] = {}  # prefix hash → block id
        self.prefix_queries = 0  # prompt tokens looked up, and how many of them were found cached
        self.prefix_hits = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def ref_count(self, block: int) -> int:
        return self._refs[block]

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- admission -------------------------------------------------------------------------------

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Blocks that already hold the KV of `seq`'s leading full blocks. At least the last token is
        left out, so that the forward still computes the logits it samples from."""
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        usable = (seq.num_tokens - 1) // bs
        hashes = self._hashes(seq, usable)
        found: list[int] = []
        for i, h in enumerate(hashes):
            block = self._cached.get(h)
            if block is None or self._tokens[block] != tuple(seq.token_ids[i * bs:(i + 1) * bs]):
                break
            found.append(block)
        return found

    def blocks_to_allocate(self, seq: Sequence) -> int:
        """Free blocks that admitting `seq` would take (cached blocks nobody holds count: they leave the
        free list when revived)."""
        hits = self.cached_prefix(seq)
        held = sum(1 for b in hits if self._refs[b] > 0)
        return self.blocks_for(seq.num_tokens) - held

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        return self.blocks_to_allocate(seq) + reserve <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting `seq` blocks for its whole prompt: the cached prefix shared, the rest fresh.
        Sets `num_computed_tokens` to the tokens found cached."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already holds blocks")
        if not self.can_allocate(seq):
            raise RuntimeError(f"sequence {seq.seq_id} needs {self.blocks_to_allocate(seq)} blocks, "
                               f"{len(self._free)} free")
        hits = self.cached_prefix(seq)
        for block in hits:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1
        seq.block_table = list(hits)
        seq.num_computed_tokens = len(hits) * self.block_size
        self.prefix_queries += seq.num_tokens
        self.prefix_hits += seq.num_computed_tokens
        self.cover(seq)

    # -- decoding --------------------------------------------------------------------------------

    def blocks_missing(self, seq: Sequence) -> int:
        """Blocks `seq` still needs so that every one of its tokens has a KV slot."""
        return max(0, self.blocks_for(seq.num_tokens) - len(seq.block_table))

    def can_cover(self, seq: Sequence, reserve: int = 0) -> bool:
        return self.blocks_missing(seq) + reserve <= len(self._free)

    def cover(self, seq: Sequence) -> None:
        """Give `seq` fresh blocks for all of its tokens (one more on decode, at a block boundary)."""
        missing = self.blocks_missing(seq)
        if missing > len(self._free):
            raise RuntimeError(f"sequence {seq.seq_id} needs {missing} blocks, {len(self._free)} free")
        for _ in range(missing):
            seq.block_table.append(self._take())

    def commit(self, seq: Sequence) -> None:
        """Register the full blocks of `seq` whose KV is now computed, so later prompts can share them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        hashes = self._hashes(seq, full)
        for i in range(seq.num_committed_blocks, full):
            block, h = seq.block_table[i], hashes[i]
            if self._hash[block] is None and h not in self._cached:
                self._hash[block] = h
                self._tokens[block] = tuple(seq.token_ids[i * bs:(i + 1) * bs])
                self._cached[h] = block
        seq.num_committed_blocks = max(seq.num_committed_blocks, full)

    def free(self, seq: Sequence) -> None:
        # Last blocks first: a prompt's tail is the least likely to be shared, so it is evicted first.
        for block in reversed(seq.block_table):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
                if self._hash[block] is None:
                    self._free.move_to_end(block, last=False)  # no content worth keeping: reuse first
        seq.block_table = []
        seq.num_committed_blocks = 0

    # -- helpers ---------------------------------------------------------------------------------

    def _take(self) -> int:
        block, _ = self._free.popitem(last=False)
        h = self._hash[block]
        if h is not None:  # evict the prefix it held
            if self._cached.get(h) == block:
                del self._cached[h]
            self._hash[block] = None
            self._tokens[block] = ()
        self._refs[block] = 1
        return block

    def _hashes(self, seq: Sequence, count: int) -> list[int]:
        """The chained hashes of `seq`'s first `count` full blocks, extended and kept on the sequence
        (its tokens only ever grow, so a computed hash stays right)."""
        hashes, bs = seq.block_hashes, self.block_size
        while len(hashes) < count:
            i = len(hashes)
            parent = hashes[-1] if hashes else 0
            hashes.append(hash((parent, *seq.token_ids[i * bs:(i + 1) * bs])))
        return hashes[:count]
