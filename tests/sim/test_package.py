import gateway.sim


def test_public_surface_is_exactly_the_front_door() -> None:
    assert gateway.sim.__all__ == sorted(gateway.sim.__all__)
    assert set(gateway.sim.__all__) == {n for n in dir(gateway.sim) if not n.startswith("_")} - {
        "app",
        "cli",
        "config",
        "embeddings",
        "exchange",
        "plan",
        "serving",
        "state",
        "stats",
        "tools",
        "vocab",
        "wire",
    }
