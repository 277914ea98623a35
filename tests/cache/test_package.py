import cache


def test_public_names_are_exactly_the_sorted_front_door() -> None:
    assert cache.__all__ == sorted(cache.__all__)
    assert set(cache.__all__) == {
        "CacheLookup", "CacheSettings", "CacheSwitch", "Calibration", "EmbedFn", "Embedder", "GuardPolicy",
        "MemoryStore", "RedisStore", "ResponseCache", "SentenceEmbedder", "Store", "StoreUnavailable",
        "Verdict", "bundled_minilm_path", "load_calibration", "open_store",
    }
    for name in cache.__all__:
        assert getattr(cache, name) is not None
