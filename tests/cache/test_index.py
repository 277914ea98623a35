import numpy as np

from cache.index import IndexSet, PartitionIndex

DIM = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_flat_search_returns_best_first_and_respects_the_floor() -> None:
    index = PartitionIndex(DIM, hnsw_min=1000)
    for i in range(10):
        index.add(f"e{i}", unit(i), expires_at=1e12)
    found = index.search(unit(3), k=3)
    assert found[0][0] == "e3" and abs(found[0][1] - 1.0) < 1e-5
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert index.search(unit(3), k=3, floor=0.999) == [("e3", found[0][1])]
    assert index.kind == "flat"


def test_deletion_in_flat_and_hnsw() -> None:
    for hnsw_min, kind in ((1000, "flat"), (16, "hnsw")):
        index = PartitionIndex(DIM, hnsw_min=hnsw_min)
        for i in range(40):
            index.add(f"e{i}", unit(i), expires_at=1e12)
        assert index.kind == kind
        index.remove("e7")
        assert "e7" not in index and len(index) == 39
        assert all(entry_id != "e7" for entry_id, _ in index.search(unit(7), k=5))
        assert index.search(unit(8), k=1)[0][0] == "e8"


def test_hnsw_rebuilds_after_many_deletions() -> None:
    index = PartitionIndex(DIM, hnsw_min=16)
    for i in range(64):
        index.add(f"e{i}", unit(i), expires_at=1e12)
    for i in range(40):
        index.remove(f"e{i}")
    assert len(index) == 24
    assert index.search(unit(50), k=1)[0][0] == "e50"
    assert not any(entry_id == f"e{i}" for i in range(40) for entry_id, _ in index.search(unit(i), k=3))


def test_expired_vectors_are_never_candidates() -> None:
    index = PartitionIndex(DIM)
    index.add("old", unit(1), expires_at=100.0)
    index.add("new", unit(2), expires_at=300.0)
    assert [e for e, _ in index.search(unit(1), k=2, now=200.0)] == ["new"]
    assert index.expire(200.0) == 1 and len(index) == 1


def test_adding_an_id_twice_keeps_one() -> None:
    index = PartitionIndex(DIM)
    index.add("a", unit(1), expires_at=1e12)
    index.add("a", unit(1), expires_at=1e12)
    assert len(index) == 1 and len(index.search(unit(1), k=5)) == 1


def test_index_set_drops_least_recently_used_partitions() -> None:
    parts = IndexSet(DIM, max_partitions=2, hnsw_min=100)
    parts.get("a").index.add("x", unit(1), 1e12)
    parts.get("b")
    parts.get("a")  # a is now more recent than b
    parts.get("c")
    assert len(parts) == 2
    assert len(parts.get("a").index) == 1  # kept
    assert parts.vectors() == 1
