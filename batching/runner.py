"""The model runner: the only module that uses torch.

It loads a Llama-family causal LM with transformers (a directory, or a GGUF file via `gguf_file=`),
keeps only its weights (q/k/v and gate/up fused), allocates the paged KV cache once, and runs one
forward per iteration over every scheduled chunk: decodes are one token each and share a single
batched attention call; prompt chunks attend over their cached prefix. Logits are computed only
where a token is sampled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from batching.devices import cpu_flags, default_cpu_dtype
from batching.grammar import Matcher
from batching.memory import (
    DEFAULT_CPU_KV_CACHE_MB,
    ModelShape,
    cuda_kv_budget_bytes,
    forward_reserve_bytes,
    kv_blocks_for_budget,
    kv_bytes_per_token,
)
from batching.models import ModelSource
from batching.params import SamplingParams
from batching.scheduler import ScheduledChunk
from batching.sequence import Sequence as EngineSequence

__all__ = ["ModelRunner", "RunnerOptions", "cuda_device_count"]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    device: str = "cpu"
    dtype: str = "auto"
    max_model_len: int = 2048
    block_size: int = 16
    kv_cache_memory_mb: int | None = None
    kv_cache_blocks: int | None = None
    gpu_memory_utilization: float = 0.85
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512


@dataclass(slots=True)
class _Layer:
    input_norm: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up_weight: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor
    down_bias: torch.Tensor | None
    act: Callable[[torch.Tensor], torch.Tensor]


@dataclass(slots=True)
class _Sampler:
    params: SamplingParams
    rng: random.Random
    matcher: Matcher | None = None

    @property
    def temperature(self) -> float:
        return self.params.temperature


@dataclass(slots=True)
class _DecodeGroup:
    begin: int  # row range in the flattened batch
    end: int
    blocks: torch.Tensor  # cache rows covering every member's context, padded to the longest
    mask: torch.Tensor


def _length_groups(lengths: list[int], max_groups: int = 4, min_size: int = 4) -> list[tuple[int, int]]:
    """Row ranges of `lengths` (ascending) such that each range is padded to its own last length: a
    new group starts where the length has grown by half since the group's first, once the group has
    `min_size` rows (small groups cost more in calls than they save in padding)."""
    groups: list[tuple[int, int]] = []
    begin = 0
    for i, n in enumerate(lengths):
        if i - begin >= min_size and n > 1.5 * lengths[begin] and len(groups) < max_groups - 1:
            groups.append((begin, i))
            begin = i
    if lengths:
        groups.append((begin, len(lengths)))
    return groups


@dataclass(slots=True)
class _Prefill:
    begin: int  # row range of this chunk in the flattened batch
    end: int
    start: int  # its first position in the sequence
    blocks: torch.Tensor | None  # block ids covering the context, when there is a cached prefix
    mask: torch.Tensor | None


def _resolve_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype to run in and why (logged, and shown in the pool's stats)."""
    if name != "auto":
        return _DTYPES[name], "configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "the GPU supports bfloat16"
        return torch.float16, "the GPU has no bfloat16"
    try:
        with open("/proc/cpuinfo") as f:
            flags = cpu_flags(f.read())
    except OSError:
        flags = frozenset()
    chosen, why = default_cpu_dtype(flags)
    return _DTYPES[chosen], why


def _bias(module: Any) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.detach() if bias is not None else None


def _cat_bias(modules: Sequence[Any]) -> torch.Tensor | None:
    biases = [_bias(m) for m in modules]
    if all(b is None for b in biases):
        return None
    parts = [b if b is not None else torch.zeros(m.weight.shape[0]) for b, m in zip(biases, modules, strict=True)]
    return torch.cat(parts)


class ModelRunner:
    def __init__(self, source: ModelSource, options: RunnerOptions):
        started = time.perf_counter()
        self.options = options
        self.device = torch.device(options.device)
        self.dtype, self.dtype_reason = _resolve_dtype(options.dtype, self.device)
        hf = self._load(source)
        config = hf.config
        self.model_type: str = config.model_type
        self.num_layers: int = config.num_hidden_layers
        self.num_heads: int = config.num_attention_heads
        self.num_kv_heads: int = config.num_key_value_heads
        self.head_dim: int = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.hidden_size: int = config.hidden_size
        self.vocab_size: int = config.vocab_size
        self.eps: float = config.rms_norm_eps
        self.eos_token_ids = self._eos_ids(hf)
        limits = [options.max_model_len, getattr(config, "max_position_embeddings", None) or options.max_model_len]
        if getattr(config, "use_sliding_window", True) and getattr(config, "sliding_window", None):
            limits.append(int(config.sliding_window))  # within the window, sliding attention is full attention
        self.max_model_len = min(limits)
        self._extract(hf)
        self.shape = ModelShape(
            self.num_layers, self.hidden_size, config.intermediate_size, self.num_heads, self.num_kv_heads,
            self.head_dim, self.vocab_size, torch.finfo(self.dtype).bits // 8,
        )
        del hf
        self.block_size = options.block_size
        self.num_kv_blocks = self._kv_blocks()
        # Head-major blocks: gathering a sequence's blocks yields one contiguous [tokens, head_dim]
        # matrix per KV head, which batched attention reads without another copy.
        cache_shape = (2, self.num_layers, self.num_kv_heads, self.num_kv_blocks, self.block_size, self.head_dim)
        # Zeros, not empty: masked-out slots are multiplied by zero weights and must not hold NaN.
        self.kv_cache = torch.zeros(cache_shape, dtype=self.dtype, device=self.device)
        self._samplers: dict[int, _Sampler] = {}
        self._logprobs: dict[int, tuple[float, tuple[int, ...], tuple[float, ...]]] = {}
        # For unpacking grammar bitmasks: bit j of 32-bit word i is token 32 * i + j.
        self._bits = torch.arange(32, dtype=torch.int32)
        self._seed_rng = random.Random()
        self.load_seconds = time.perf_counter() - started

    # -- loading ---------------------------------------------------------------------------------

    def _load(self, source: ModelSource) -> Any:
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if source.gguf_file is not None:
            kwargs["gguf_file"] = source.gguf_file
        model: Any = AutoModelForCausalLM.from_pretrained(source.directory, **kwargs)
        if model.config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model type {model.config.model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}"
            )
        return model.eval()

    @staticmethod
    def _eos_ids(hf: Any) -> frozenset[int]:
        ids: set[int] = set()
        for holder in (hf.generation_config, hf.config):
            value = getattr(holder, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return frozenset(ids)

    def _extract(self, hf: Any) -> None:
        dev, dt = self.device, self.dtype

        def put(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().to(device=dev, dtype=dt).contiguous()

        def need(t: torch.Tensor | None) -> torch.Tensor:
            assert t is not None
            return t

        self.layers: list[_Layer] = []
        for layer in hf.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = (attn.q_proj, attn.k_proj, attn.v_proj)
            q_norm = getattr(attn, "q_norm", None)
            k_norm = getattr(attn, "k_norm", None)
            self.layers.append(_Layer(
                input_norm=need(put(layer.input_layernorm.weight)),
                qkv_weight=need(put(torch.cat([p.weight for p in projections]))),
                qkv_bias=put(_cat_bias(projections)),
                o_weight=need(put(attn.o_proj.weight)),
                o_bias=put(_bias(attn.o_proj)),
                q_norm=put(q_norm.weight) if q_norm is not None else None,
                k_norm=put(k_norm.weight) if k_norm is not None else None,
                post_norm=need(put(layer.post_attention_layernorm.weight)),
                gate_up_weight=need(put(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))),
                gate_up_bias=put(_cat_bias((mlp.gate_proj, mlp.up_proj))),
                down_weight=need(put(mlp.down_proj.weight)),
                down_bias=put(_bias(mlp.down_proj)),
                act=mlp.act_fn,
            ))
        self.embed = need(put(hf.model.embed_tokens.weight))
        self.final_norm = need(put(hf.model.norm.weight))
        lm_head = hf.get_output_embeddings().weight
        self.lm_head = self.embed if lm_head is hf.model.embed_tokens.weight else need(put(lm_head))
        # The model's own rotary module gives the exact cos/sin it uses, whatever its rope scaling.
        positions = torch.arange(self.max_model_len)[None]
        probe = torch.zeros(1, dtype=torch.float32)
        with torch.inference_mode():
            cos, sin = hf.model.rotary_emb(probe, positions)
        self.cos = cos[0].to(device=dev, dtype=dt)[:, None, :]
        self.sin = sin[0].to(device=dev, dtype=dt)[:, None, :]

    def _kv_blocks(self) -> int:
        o = self.options
        if o.kv_cache_blocks is not None:
            return o.kv_cache_blocks
        per_token = kv_bytes_per_token(self.shape)
        if o.kv_cache_memory_mb is not None:
            budget = o.kv_cache_memory_mb << 20
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            reserve = forward_reserve_bytes(self.shape, o.max_num_batched_tokens, o.max_num_seqs, self.max_model_len)
            budget = cuda_kv_budget_bytes(free, total, o.gpu_memory_utilization, reserve)
        else:
            budget = DEFAULT_CPU_KV_CACHE_MB << 20
        return kv_blocks_for_budget(budget, o.block_size, per_token)

    # -- sampling state --------------------------------------------------------------------------

    def add_sequence(self, seq_id: int, params: SamplingParams, matcher: Matcher | None = None) -> None:
        seed = params.seed if params.seed is not None else self._seed_rng.getrandbits(63)
        self._samplers[seq_id] = _Sampler(params, random.Random(seed), matcher)

    def drop_sequence(self, seq_id: int) -> None:
        self._samplers.pop(seq_id, None)
        self._logprobs.pop(seq_id, None)

    def take_logprobs(self) -> dict[int, tuple[float, tuple[int, ...], tuple[float, ...]]]:
        """The logprobs of the tokens the last `run` sampled, for the sequences that asked for them."""
        out, self._logprobs = self._logprobs, {}
        return out

    # -- one iteration ---------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, chunks: Sequence[ScheduledChunk]) -> list[int]:
        """Compute KV for every chunk and return one token per chunk with `sample`, in chunk order."""
        if not chunks:
            return []
        # Decodes shortest context first: groups of similar length share one attention call each.
        decodes = sorted((c for c in chunks if c.num_tokens == 1), key=lambda c: c.start)
        prefills = [c for c in chunks if c.num_tokens > 1]
        ordered = decodes + prefills  # decode rows first: their attention is one batched call
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        rows: dict[int, int] = {}  # id(chunk) → its sampled row
        for chunk in ordered:
            seq, table = chunk.seq, chunk.seq.block_table
            span = range(chunk.start, chunk.start + chunk.num_tokens)
            ids.extend(seq.token_ids[chunk.start:chunk.start + chunk.num_tokens])
            positions.extend(span)
            slots.extend(table[p // bs] * bs + p % bs for p in span)
            if chunk.sample:
                rows[id(chunk)] = len(ids) - 1
        dev = self.device
        ids_t = torch.tensor(ids, dtype=torch.long, device=dev)
        pos_t = torch.tensor(positions, dtype=torch.long, device=dev)
        slots_t = torch.tensor(slots, dtype=torch.long, device=dev)
        decode_groups = self._decode_layout(decodes)
        prefill_layout = self._prefill_layout(prefills, len(decodes))
        sampled = [c for c in chunks if c.sample]
        sample_rows = torch.tensor([rows[id(c)] for c in sampled], dtype=torch.long, device=dev)

        x = F.embedding(ids_t, self.embed)
        cos, sin = self.cos[pos_t], self.sin[pos_t]
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            # After the last layer's attention has written its KV, only the sampled rows matter.
            keep = sample_rows if index == last else None
            x = self._layer(index, layer, x, cos, sin, slots_t, decode_groups, prefill_layout, keep)
        if not sampled:
            return []
        hidden = self._rms(x, self.final_norm)
        logits = F.linear(hidden, self.lm_head).float()
        return self._sample(logits, [c.seq for c in sampled])

    def _decode_layout(self, decodes: list[ScheduledChunk]) -> list[_DecodeGroup]:
        """Decode rows (sorted by context length) cut into groups, each padded to its own longest
        context: with mixed lengths, one group padded to the longest would gather and attend over
        mostly padding."""
        groups: list[_DecodeGroup] = []
        bs = self.block_size
        for begin, end in _length_groups([c.start + 1 for c in decodes]):
            members = decodes[begin:end]
            lengths = [c.start + 1 for c in members]
            width = -(-max(lengths) // bs)
            tables = [c.seq.block_table[:width] + [0] * (width - len(c.seq.block_table[:width])) for c in members]
            blocks = self._block_rows(torch.tensor(tables, dtype=torch.long, device=self.device).view(-1))
            lengths_t = torch.tensor(lengths, dtype=torch.long, device=self.device)
            mask = torch.arange(width * bs, device=self.device)[None, :] < lengths_t[:, None]
            groups.append(_DecodeGroup(begin, end, blocks, mask[None, :, None, :]))
        return groups

    def _prefill_layout(self, prefills: list[ScheduledChunk], first_row: int) -> list[_Prefill]:
        layout: list[_Prefill] = []
        row = first_row
        for chunk in prefills:
            n, start = chunk.num_tokens, chunk.start
            blocks = mask = None
            if start > 0:
                context = start + n
                blocks = self._block_rows(torch.tensor(chunk.seq.block_table[:-(-context // self.block_size)],
                                                       dtype=torch.long, device=self.device))
                query_pos = torch.arange(start, context, device=self.device)[:, None]
                mask = torch.arange(context, device=self.device)[None, :] <= query_pos
            layout.append(_Prefill(row, row + n, start, blocks, mask))
            row += n
        return layout

    def _block_rows(self, blocks: torch.Tensor) -> torch.Tensor:
        """Rows of a layer's cache seen as [kv_heads * blocks, block * head_dim], head by head: one
        `embedding` lookup then gathers every head's blocks (several times faster on CPU than
        `index_select` along the block dimension, which copies block by block on one thread)."""
        heads = torch.arange(self.num_kv_heads, device=blocks.device)[:, None] * self.num_kv_blocks
        return (heads + blocks[None, :]).view(-1)

    def _gather(self, cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[kv_heads, len(rows) // kv_heads * block, head_dim]: the blocks `_block_rows` named."""
        flat = cache.view(self.num_kv_heads * self.num_kv_blocks, self.block_size * self.head_dim)
        return F.embedding(rows, flat).view(self.num_kv_heads, -1, self.head_dim)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # the fused kernel gives transformers' LlamaRMSNorm bit for bit
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        # In half precision transformers normalises in float32 and scales after casting back.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layer(
        self,
        index: int,
        layer: _Layer,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        slots: torch.Tensor,
        decodes: list[_DecodeGroup],
        prefills: list[_Prefill],
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = F.linear(self._rms(x, layer.input_norm), layer.qkv_weight, layer.qkv_bias)
        qk, v = torch.split(qkv, [(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
        qk = qk.view(tokens, heads + kv_heads, dim)
        v = v.reshape(tokens, kv_heads, dim)
        if layer.q_norm is not None and layer.k_norm is not None:
            qk = torch.cat([self._rms(qk[:, :heads], layer.q_norm), self._rms(qk[:, heads:], layer.k_norm)], 1)
        q, k = torch.split(self._rotate(qk, cos, sin), [heads, kv_heads], dim=1)  # one rotation for both
        k_cache, v_cache = self.kv_cache[0, index], self.kv_cache[1, index]  # [kv_heads, blocks, block, dim]
        k_cache.view(kv_heads, -1, dim).index_copy_(1, slots, k.transpose(0, 1))
        v_cache.view(kv_heads, -1, dim).index_copy_(1, slots, v.transpose(0, 1))

        out = torch.empty(tokens, heads, dim, dtype=x.dtype, device=x.device)
        for g in decodes:
            n = g.end - g.begin
            # Grouped-query attention without repeating K/V: batch over (KV head, sequence), and each
            # KV head's group of query heads acts as that sequence's queries.
            qd = q[g.begin:g.end].view(n, kv_heads, heads // kv_heads, dim).transpose(0, 1)
            kd = self._gather(k_cache, g.blocks).view(kv_heads, n, -1, dim)
            vd = self._gather(v_cache, g.blocks).view(kv_heads, n, -1, dim)
            attn = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=g.mask)
            out[g.begin:g.end] = attn.transpose(0, 1).reshape(n, heads, dim)
        for p in prefills:
            qp = q[p.begin:p.end].transpose(0, 1)[None]
            if p.blocks is None:
                kp, vp = k[p.begin:p.end].transpose(0, 1)[None], v[p.begin:p.end].transpose(0, 1)[None]
                attn = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True)
            else:
                assert p.mask is not None
                context = p.mask.shape[1]
                kp = self._gather(k_cache, p.blocks)[None, :, :context]
                vp = self._gather(v_cache, p.blocks)[None, :, :context]
                attn = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=p.mask, enable_gqa=True)
            out[p.begin:p.end] = attn[0].transpose(0, 1)
        out = out.view(tokens, heads * dim)
        if keep is not None:
            x, out = x[keep], out[keep]
        x = x + F.linear(out, layer.o_weight, layer.o_bias)
        gate, up = F.linear(self._rms(x, layer.post_norm), layer.gate_up_weight, layer.gate_up_bias).chunk(2, -1)
        return x + F.linear(layer.act(gate) * up, layer.down_weight, layer.down_bias)

    def _sample(self, logits: torch.Tensor, seqs: list[EngineSequence]) -> list[int]:
        samplers = [self._samplers[s.seq_id] for s in seqs]
        raw = logits
        if any(s.params.penalised for s in samplers):
            logits = logits.clone()
            self._penalise(logits, seqs, samplers)
        constrained = [i for i, s in enumerate(samplers) if s.matcher is not None and not s.matcher.failed]
        if constrained:
            if logits is raw:
                logits = logits.clone()
            self._mask(logits, constrained, samplers)
        tokens = logits.argmax(dim=-1)
        rows = [i for i, s in enumerate(samplers) if s.temperature > 0]
        if rows:
            tokens[rows] = self._draw(logits[rows], [samplers[i] for i in rows])
        chosen = [int(t) for t in tokens.tolist()]
        for i in constrained:
            matcher = samplers[i].matcher
            assert matcher is not None
            matcher.advance(chosen[i])
        wanted = [i for i, s in enumerate(samplers) if s.params.logprobs]
        if wanted:
            self._record_logprobs(raw, wanted, seqs, samplers, chosen)
        return chosen

    def _draw(self, logits: torch.Tensor, picked: list[_Sampler]) -> torch.Tensor:
        dev = logits.device
        temperature = torch.tensor([s.temperature for s in picked], device=dev)
        # One uniform draw per sequence from its own generator: a seed gives the same output
        # whatever else shares the batch.
        uniform = torch.tensor([s.rng.random() for s in picked], device=dev)[:, None]
        probs = torch.softmax(logits / temperature[:, None], dim=-1)
        if any(s.params.top_k > 0 or s.params.top_p < 1 for s in picked):
            probs, order = probs.sort(dim=-1, descending=True)
            vocab = probs.shape[-1]
            top_k = torch.tensor([s.params.top_k if s.params.top_k > 0 else vocab for s in picked], device=dev)
            probs = probs * (torch.arange(vocab, device=dev)[None, :] < top_k[:, None])
            probs = probs / probs.sum(-1, keepdim=True)
            top_p = torch.tensor([s.params.top_p for s in picked], device=dev)
            probs = probs * ((probs.cumsum(-1) - probs) < top_p[:, None])  # keeps at least the first
            cumulative = probs.cumsum(-1)
            choice = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
            return order.gather(1, choice.clamp(max=vocab - 1))[:, 0]
        cumulative = probs.cumsum(-1)
        choice = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
        return choice.clamp(max=probs.shape[-1] - 1)[:, 0]

    def _penalise(self, logits: torch.Tensor, seqs: list[EngineSequence], samplers: list[_Sampler]) -> None:
        """OpenAI's presence and frequency penalties over the generated tokens, and vLLM's repetition
        penalty over prompt and output (positive logits divided by it, negative ones multiplied)."""
        vocab, dev = logits.shape[-1], logits.device
        for i, (seq, sampler) in enumerate(zip(seqs, samplers, strict=True)):
            p = sampler.params
            if not p.penalised:
                continue
            row = logits[i]
            if p.repetition_penalty != 1.0:
                seen = torch.unique(torch.tensor(seq.token_ids, dtype=torch.long, device=dev))
                values = row[seen]
                row[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
            output = seq.token_ids[seq.num_prompt_tokens:]
            if output and (p.presence_penalty or p.frequency_penalty):
                counts = torch.bincount(torch.tensor(output, dtype=torch.long, device=dev), minlength=vocab)
                counts = counts[:vocab].to(row.dtype)
                row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)

    def _mask(self, logits: torch.Tensor, rows: list[int], samplers: list[_Sampler]) -> None:
        """Only the tokens each grammar allows next keep their logits."""
        vocab = logits.shape[-1]
        masks = []
        for i in rows:
            matcher = samplers[i].matcher
            assert matcher is not None
            masks.append(torch.frombuffer(bytearray(matcher.allowed()), dtype=torch.int32))
        words = torch.stack(masks).to(logits.device)
        allowed = ((words[:, :, None] >> self._bits.to(logits.device)) & 1).bool().view(len(rows), -1)[:, :vocab]
        logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))

    def _record_logprobs(self, logits: torch.Tensor, rows: list[int], seqs: list[EngineSequence],
                         samplers: list[_Sampler], chosen: list[int]) -> None:
        logprobs = torch.log_softmax(logits[rows].float(), dim=-1)
        top = max(samplers[i].params.top_logprobs for i in rows)
        picked = logprobs[torch.arange(len(rows)), torch.tensor([chosen[i] for i in rows])].tolist()
        if top:
            values, ids = logprobs.topk(top, dim=-1)
            top_values, top_ids = values.tolist(), ids.tolist()
        for k, i in enumerate(rows):
            n = samplers[i].params.top_logprobs
            if n:
                entry = (float(picked[k]), tuple(top_ids[k][:n]), tuple(float(v) for v in top_values[k][:n]))
            else:
                entry = (float(picked[k]), (), ())
            self._logprobs[seqs[i].seq_id] = entry

    def warmup(self) -> None:
        """One prompt chunk and one decode step through the cache, so the first request is not slow."""
        n = min(32, self.max_model_len - 1, self.num_kv_blocks * self.block_size - 1)
        blocks = list(range(-(-(n + 1) // self.block_size)))
        seq = EngineSequence(seq_id=-1, token_ids=[0] * (n + 1), max_tokens=1, block_table=blocks)
        self.add_sequence(-1, SamplingParams(temperature=0.0))
        try:
            self.run([ScheduledChunk(seq, 0, n, sample=True)])
            self.run([ScheduledChunk(seq, n, 1, sample=True)])
        finally:
            self.drop_sequence(-1)
            self.kv_cache.zero_()
