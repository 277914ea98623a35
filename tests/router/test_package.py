import router


def test_public_surface_is_exactly_the_front_door() -> None:
    assert router.__all__ == sorted(router.__all__)
    assert router.__all__ == ["Band", "Embedder", "KeepPolicy", "Narrowing", "Reason", "RouterSettings", "ToolRouter"]
    for name in router.__all__:
        assert getattr(router, name) is not None


def test_router_does_not_import_other_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys, router; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cache', 'gateway', 'batching')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
