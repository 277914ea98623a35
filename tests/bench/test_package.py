import bench.loadgen

MODULES = {
    "benchmark",
    "corpus",
    "http",
    "plots",
    "prices",
    "processes",
    "progress",
    "record",
    "report",
    "runner",
    "shapes",
    "slo",
    "summary",
    "target",
    "tokens",
    "workloads",
}


def test_public_surface_is_exactly_the_front_door() -> None:
    assert bench.loadgen.__all__ == sorted(bench.loadgen.__all__)
    public = {n for n in dir(bench.loadgen) if not n.startswith("_")} - MODULES
    assert set(bench.loadgen.__all__) == public
