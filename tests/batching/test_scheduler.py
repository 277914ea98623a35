"""The scheduler as pure policy: tables of situations and what the next iterations must schedule."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.config import SchedulerConfig
from batching.scheduler import ScheduledBatch, Scheduler, StepResult
from batching.sequence import Priority, Sequence, SequenceStatus

INT, B = Priority.INTERACTIVE, Priority.BATCH
EOS = 2


@dataclass(frozen=True)
class Req:
    prompt: int
    priority: Priority = INT
    max_tokens: int = 100


def make(config: SchedulerConfig, reqs: list[Req]) -> Scheduler:
    scheduler = Scheduler(config)
    for i, r in enumerate(reqs):
        scheduler.add(Sequence(i, [10 + i] * r.prompt, r.max_tokens, r.priority, frozenset({EOS})))
    return scheduler


def chunks(batch: ScheduledBatch) -> list[tuple[int, int, int, bool]]:
    return [(c.seq.seq_id, c.start, c.num_tokens, c.sample) for c in batch.chunks]


def step(scheduler: Scheduler, token: int = 7) -> tuple[ScheduledBatch, list[StepResult]]:
    batch = scheduler.schedule()
    sampled = [token for c in batch.chunks if c.sample]
    return batch, scheduler.postprocess(batch, sampled)


def cfg(**kw: Any) -> SchedulerConfig:
    base = {"max_num_seqs": 8, "max_num_batched_tokens": 16, "max_model_len": 64, "num_kv_blocks": 64,
            "block_size": 4}
    return SchedulerConfig(**{**base, **kw})


# -- the first iteration -------------------------------------------------------------------------

FIRST_ITERATION = [
    ("a short prompt is prefilled whole and sampled", cfg(), [Req(5)], [(0, 0, 5, True)]),
    ("a long prompt is chunked by the token budget", cfg(max_num_batched_tokens=8), [Req(20)],
     [(0, 0, 8, False)]),
    ("the budget is shared in arrival order", cfg(max_num_batched_tokens=8), [Req(5), Req(6)],
     [(0, 0, 5, True), (1, 0, 3, False)]),
    ("max_num_seqs caps admission", cfg(max_num_seqs=2), [Req(2), Req(2), Req(2)],
     [(0, 0, 2, True), (1, 0, 2, True)]),
    ("interactive is admitted before earlier batch work", cfg(max_num_seqs=1), [Req(3, B), Req(3, INT)],
     [(1, 0, 3, True)]),
    ("KV blocks for the whole prompt are needed to enter",
     cfg(num_kv_blocks=12, max_model_len=32, max_num_batched_tokens=64), [Req(30), Req(30)], [(0, 0, 30, True)]),
    ("the head of the queue blocks smaller prompts behind it",
     cfg(num_kv_blocks=10, max_model_len=40, max_num_batched_tokens=64), [Req(20), Req(30), Req(2)],
     [(0, 0, 20, True)]),
    ("the watermark keeps blocks free beside running work",
     cfg(num_kv_blocks=10, max_model_len=40, max_num_batched_tokens=64, watermark_blocks=4), [Req(20), Req(8)],
     [(0, 0, 20, True)]),
    ("below the watermark a second prompt still enters",
     cfg(num_kv_blocks=10, max_model_len=40, max_num_batched_tokens=64, watermark_blocks=3), [Req(20), Req(8)],
     [(0, 0, 20, True), (1, 0, 8, True)]),
    ("a lone sequence ignores the watermark", cfg(num_kv_blocks=10, max_model_len=40, watermark_blocks=5),
     [Req(36)], [(0, 0, 16, False)]),
]


@pytest.mark.parametrize(("case", "config", "reqs", "expected"), FIRST_ITERATION, ids=[c[0] for c in FIRST_ITERATION])
def test_first_iteration(case: str, config: SchedulerConfig, reqs: list[Req],
                         expected: list[tuple[int, int, int, bool]]) -> None:
    scheduler = make(config, reqs)
    assert chunks(scheduler.schedule()) == expected, case


# -- finishing -----------------------------------------------------------------------------------

FINISH = [
    ("the end-of-sequence token stops", Req(3, max_tokens=10), 128, EOS, "stop", 1),
    ("max_tokens ends with length", Req(3, max_tokens=3), 128, 7, "length", 3),
    ("max_model_len ends with length", Req(3, max_tokens=100), 6, 7, "length", 3),
]


@pytest.mark.parametrize(("case", "req", "max_len", "token", "reason", "generated"), FINISH,
                         ids=[c[0] for c in FINISH])
def test_finish_reasons(case: str, req: Req, max_len: int, token: int, reason: str, generated: int) -> None:
    scheduler = make(cfg(max_model_len=max_len), [req])
    results: list[StepResult] = []
    while scheduler.has_work:
        results += step(scheduler, token)[1]
    assert [r.finish_reason for r in results] == [None] * (generated - 1) + [reason], case
    assert scheduler.block_manager.num_used_blocks == 0


ADD_ERRORS = [
    ("empty prompt", 0, "empty"),
    ("prompt as long as the context", 64, "max_model_len"),
]


@pytest.mark.parametrize(("case", "length", "message"), ADD_ERRORS, ids=[c[0] for c in ADD_ERRORS])
def test_add_rejects(case: str, length: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scheduler(cfg()).add(Sequence(0, [1] * length, 4))


def test_add_rejects_a_duplicate_id() -> None:
    scheduler = make(cfg(), [Req(3)])
    with pytest.raises(ValueError, match="already"):
        scheduler.add(Sequence(0, [1, 2], 4))


CONFIG_ERRORS = [
    ("max_num_seqs", {"max_num_seqs": 0}),
    ("capacity", {"max_model_len": 1000, "num_kv_blocks": 10}),
    ("watermark_blocks", {"watermark_blocks": -1}),
]


@pytest.mark.parametrize(("message", "overrides"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_validation(message: str, overrides: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=message):
        cfg(**overrides)


# -- over several iterations ---------------------------------------------------------------------


def test_decodes_continue_while_a_long_prompt_is_prefilled() -> None:
    scheduler = make(cfg(max_num_batched_tokens=8, max_model_len=64), [Req(2)])
    step(scheduler)  # seq 0 prefilled, now decoding
    scheduler.add(Sequence(1, [5] * 40, 4))
    seen = []
    for _ in range(6):
        batch, _ = step(scheduler)
        seen.append(chunks(batch))
    assert seen[0] == [(0, 2, 1, True), (1, 0, 7, False)]
    # Every iteration decodes seq 0 while seq 1's 40-token prompt advances by the rest of the budget.
    assert all(c[0][0] == 0 and c[0][2] == 1 for c in seen)
    assert [c[1][1:3] for c in seen] == [(0, 7), (7, 7), (14, 7), (21, 7), (28, 7), (35, 5)]
    assert seen[-1][1][3] is True  # the last chunk samples the first token


def test_abort_frees_the_slot_for_the_next_iteration() -> None:
    scheduler = make(cfg(max_num_seqs=1), [Req(3), Req(3)])
    step(scheduler)
    batch, _ = step(scheduler)
    assert [c.seq.seq_id for c in batch.chunks] == [0]
    aborted = scheduler.abort(0)
    assert aborted is not None and aborted.status is SequenceStatus.FINISHED and aborted.finish_reason == "abort"
    assert scheduler.block_manager.num_used_blocks == 0
    assert chunks(scheduler.schedule()) == [(1, 0, 3, True)]
    assert scheduler.abort(0) is None


def test_abort_of_a_waiting_sequence() -> None:
    scheduler = make(cfg(max_num_seqs=1), [Req(3), Req(3)])
    step(scheduler)
    assert scheduler.abort(1) is not None
    assert scheduler.num_waiting == 0 and scheduler.num_running == 1


def test_kv_shortage_preempts_the_newest_and_it_resumes_with_its_tokens() -> None:
    # 6 blocks of 4 tokens; two prompts of 8 tokens take 4 blocks; decoding needs more.
    scheduler = make(cfg(num_kv_blocks=6, max_model_len=24, max_num_batched_tokens=32), [Req(8), Req(8)])
    preempted: list[int] = []
    generated = {0: 0, 1: 0}
    for _ in range(200):
        if not scheduler.has_work:
            break
        batch, results = step(scheduler)
        preempted += [s.seq_id for s in batch.preempted]
        for r in results:
            generated[r.seq_id] += 1
    assert not scheduler.has_work
    assert preempted and preempted[0] == 1  # the newer one yields first
    assert generated == {0: 16, 1: 16}  # both ran to max_model_len: nothing was lost to the preemption
    assert scheduler.num_preemptions == len(preempted)


def test_a_preempted_sequence_is_recomputed_with_what_it_generated() -> None:
    scheduler = make(cfg(num_kv_blocks=5, max_model_len=20, max_num_batched_tokens=32), [Req(8), Req(8)])
    victim = None
    while victim is None:
        batch, _ = step(scheduler)
        victim = batch.preempted[0] if batch.preempted else None
    assert victim.status is SequenceStatus.WAITING and victim.num_computed_tokens == 0
    assert victim.block_table == [] and victim.num_generated > 0
    assert scheduler.waiting[victim.priority][0] is victim
    tokens = list(victim.token_ids)
    while True:
        batch = scheduler.schedule()
        if victim.num_computed_tokens == 0 and victim.block_table:
            break  # admitted again
        scheduler.postprocess(batch, [7 for c in batch.chunks if c.sample])
    resumed = next(c for c in batch.chunks if c.seq is victim)
    assert victim.token_ids == tokens
    assert (resumed.start, resumed.num_tokens, resumed.sample) == (0, len(tokens), True)  # all recomputed


def test_no_admission_in_an_iteration_that_preempted() -> None:
    scheduler = make(cfg(num_kv_blocks=4, max_model_len=16, max_num_batched_tokens=32), [Req(7), Req(7), Req(2)])
    for _ in range(40):
        batch = scheduler.schedule()
        if batch.preempted:
            admitted = {c.seq.seq_id for c in batch.chunks if c.start == 0}
            assert not admitted & {s.seq_id for s in batch.preempted}
            assert 2 not in admitted
            return
        scheduler.postprocess(batch, [7 for c in batch.chunks if c.sample])
    pytest.fail("no preemption happened")


def test_interactive_work_preempts_running_batch_work() -> None:
    scheduler = make(cfg(max_num_seqs=2), [Req(3, B), Req(3, B)])
    step(scheduler)
    scheduler.add(Sequence(9, [4] * 3, 4, INT))
    batch = scheduler.schedule()
    assert [s.seq_id for s in batch.preempted] == [1]  # the newer batch sequence
    assert chunks(batch) == [(0, 3, 1, True), (9, 0, 3, True)]
    assert scheduler.waiting[B][0].seq_id == 1


def test_batch_work_never_preempts_interactive_work() -> None:
    scheduler = make(cfg(max_num_seqs=1), [Req(3, INT)])
    step(scheduler)
    scheduler.add(Sequence(9, [4] * 3, 4, B))
    batch = scheduler.schedule()
    assert batch.preempted == [] and chunks(batch) == [(0, 3, 1, True)]


def test_kv_preemption_picks_batch_before_older_interactive() -> None:
    scheduler = make(cfg(num_kv_blocks=6, max_model_len=24, max_num_batched_tokens=32),
                     [Req(8, B), Req(8, INT)])
    victims: list[Sequence] = []
    while not victims:
        victims = step(scheduler)[0].preempted
    assert victims[0].priority is B


def test_postprocess_checks_the_token_count() -> None:
    scheduler = make(cfg(), [Req(3)])
    batch = scheduler.schedule()
    with pytest.raises(ValueError, match="more sampled tokens"):
        scheduler.postprocess(batch, [7, 7])


# -- invariants under random operations ----------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 30), st.sampled_from([INT, B]), st.integers(1, 12)),
        st.tuples(st.just("step")),
        st.tuples(st.just("abort"), st.integers(0, 20)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    operations=ops,
    max_num_seqs=st.integers(1, 6),
    budget=st.integers(6, 40),
    blocks=st.integers(8, 24),
    block_size=st.sampled_from([1, 2, 4]),
    watermark=st.integers(0, 2),
    prefix_caching=st.booleans(),
)
def test_invariants_hold_and_every_request_completes(
    operations: list[tuple[object, ...]], max_num_seqs: int, budget: int, blocks: int, block_size: int,
    watermark: int, prefix_caching: bool,
) -> None:
    max_len = min(32, blocks * block_size)
    budget = max(budget, max_num_seqs)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs, budget, max_len, blocks, block_size, watermark,
                                          prefix_caching))
    bm = scheduler.block_manager
    expected: dict[int, int] = {}
    got: dict[int, int] = {}
    next_id = 0

    def run_step() -> None:
        batch = scheduler.schedule()
        assert batch.num_tokens <= budget
        assert len(scheduler.running) <= max_num_seqs
        tables = [b for s in scheduler.running for b in s.block_table]
        assert len(set(tables)) == bm.num_used_blocks  # blocks may be shared, never lost
        assert all(bm.ref_count(b) == tables.count(b) for b in set(tables))
        if not prefix_caching:
            assert len(tables) == len(set(tables))
        for c in batch.chunks:
            assert c.seq.status is SequenceStatus.RUNNING
            assert c.start == c.seq.num_computed_tokens
            assert len(c.seq.block_table) * block_size >= c.start + c.num_tokens
            written = {c.seq.block_table[p // block_size] for p in range(c.start, c.start + c.num_tokens)}
            assert all(bm.ref_count(b) == 1 for b in written)  # a shared block is never written
        if scheduler.has_work:
            assert not batch.is_empty  # never stalls while there is work
        for r in scheduler.postprocess(batch, [7 for c in batch.chunks if c.sample]):
            got[r.seq_id] = got.get(r.seq_id, 0) + 1

    for op in operations:
        if op[0] == "add":
            prompt = min(int(op[1]), max_len - 1)  # type: ignore[call-overload]
            priority, max_tokens = op[2], int(op[3])  # type: ignore[call-overload]
            scheduler.add(Sequence(next_id, [5] * prompt, max_tokens, priority))  # type: ignore[arg-type]
            expected[next_id] = min(max_tokens, max_len - prompt)
            next_id += 1
        elif op[0] == "abort":
            if scheduler.abort(int(op[1])) is not None:  # type: ignore[call-overload]
                expected.pop(int(op[1]))  # type: ignore[call-overload]
        else:
            run_step()
    for _ in range(10_000):
        if not scheduler.has_work:
            break
        run_step()
    assert not scheduler.has_work
    assert scheduler.block_manager.num_used_blocks == 0
    assert {k: got.get(k, 0) for k in expected} == expected  # every request produced all its tokens


def test_importing_the_scheduler_does_not_import_torch() -> None:
    code = "import sys, batching.scheduler; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- prefix caching ------------------------------------------------------------------------------


def test_a_cached_prefix_is_not_computed_again() -> None:
    scheduler = make(cfg(max_num_batched_tokens=64), [Req(10)])
    step(scheduler)  # prefill: blocks [0:4] and [4:8] are committed
    scheduler.add(Sequence(5, [10] * 10, 4, INT, frozenset({EOS})))
    batch, _ = step(scheduler)
    assert chunks(batch) == [(0, 10, 1, True), (5, 8, 2, True)]
    assert scheduler.get(5) is not None and scheduler.get(5).block_table[:2] == scheduler.get(0).block_table[:2]  # type: ignore[union-attr]


def test_other_choices_wait_for_the_first_ones_prompt() -> None:
    scheduler = Scheduler(cfg(max_num_batched_tokens=8))
    first = Sequence(0, [3] * 12, 4, INT)
    second = Sequence(1, [3] * 12, 4, INT, after=first)
    scheduler.add(first)
    scheduler.add(second)
    assert chunks(step(scheduler)[0]) == [(0, 0, 8, False)]  # the second is passed over meanwhile
    assert chunks(step(scheduler)[0]) == [(0, 8, 4, True)]
    assert chunks(step(scheduler)[0]) == [(0, 12, 1, True), (1, 8, 4, True)]  # two blocks shared


def test_a_waiting_choice_does_not_block_the_queue() -> None:
    scheduler = Scheduler(cfg(max_num_batched_tokens=8, max_num_seqs=2))
    first = Sequence(0, [3] * 12, 4, INT)
    scheduler.add(first)
    step(scheduler)
    scheduler.add(Sequence(1, [3] * 12, 4, INT, after=first))
    scheduler.add(Sequence(2, [4] * 3, 4, INT))
    assert [c.seq.seq_id for c in step(scheduler)[0].chunks] == [0, 2]
