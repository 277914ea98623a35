import sim


def test_public_surface_is_exactly_the_front_door() -> None:
    assert sim.__all__ == sorted(sim.__all__)
    assert set(sim.__all__) == {n for n in dir(sim) if not n.startswith("_")} - {
        "app",
        "cli",
        "config",
        "embeddings",
        "exchange",
        "messages",
        "plan",
        "serving",
        "state",
        "stats",
        "tools",
        "vocab",
        "wire",
    }
