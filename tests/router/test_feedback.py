import numpy as np

from router.feedback import CatalogueModel, Example, FeedbackBook, TrainingJob, train


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(v: np.ndarray, seed: int, noise: float = 0.1) -> np.ndarray:
    w = v + noise * _unit(seed, len(v))
    return (w / np.linalg.norm(w)).astype(np.float32)


def test_example_round_trips_through_json() -> None:
    example = Example("f", _unit(1), "tenant-a")
    back = Example.from_json(example.to_json())
    assert back is not None and back.name == "f" and back.tenant == "tenant-a"
    assert np.allclose(back.vector, example.vector, atol=1e-3)  # stored as float16
    assert Example.from_json("{not json") is None


def test_trained_model_boosts_the_tool_whose_examples_the_intent_resembles() -> None:
    a, b = _unit(1), _unit(2)
    examples = tuple(
        [Example("alpha", _near(a, i), "t") for i in range(5)]
        + [Example("beta", _near(b, 10 + i), "t") for i in range(5)]
        + [Example("elsewhere", _unit(3), "t")]
    )  # not in this catalogue: ignored
    model = train(TrainingJob("t", "cat", frozenset({"alpha", "beta", "gamma"}), 11, examples), c=4.0)
    assert model is not None and model.classes == ("alpha", "beta")
    names = ("gamma", "beta", None, "alpha")
    near_a = model.boosts(_near(a, 99), names, (0.5, 0.9))
    assert near_a[3] > 0.5 and near_a[1] < 0.1 and near_a[0] == 0 and near_a[2] == 0
    # An intent unlike every example gets no boost at all.
    assert np.all(model.boosts(_unit(50), names, (0.5, 0.9)) == 0)

    back = CatalogueModel.from_bytes("t", "cat", model.to_bytes())
    assert back is not None and back.version == 11 and back.classes == model.classes
    assert np.allclose(back.boosts(_near(a, 99), names, (0.5, 0.9)), near_a, atol=1e-2)


def test_one_class_model_and_count_ramp() -> None:
    a = _unit(1)
    one = train(TrainingJob("t", "cat", frozenset({"alpha"}), 1, (Example("alpha", a, "t"),)), c=4.0)
    assert one is not None and len(one.coef) == 0
    assert one.boosts(a, ("alpha",), (0.5, 0.9))[0] == 0.5  # one example counts half
    three = train(TrainingJob("t", "cat", frozenset({"alpha"}), 3, (Example("alpha", a, "t"),) * 3), c=4.0)
    assert three is not None and three.boosts(a, ("alpha",), (0.5, 0.9))[0] == 0.75


def test_book_schedules_training_only_where_there_is_something_new() -> None:
    book = FeedbackBook(max_examples=3)
    book.saw("t", "cat1", ["alpha", "beta", None])
    book.saw("t", "cat2", ["gamma"])
    assert book.stale() == []
    book.add("t", [Example("alpha", _unit(1), "t")])
    jobs = book.stale()
    assert [(j.catalogue, j.version) for j in jobs] == [("cat1", 1)]  # cat2 has no example of its tools
    model = train(jobs[0], c=1.0)
    assert model is not None
    book.install(model)
    assert book.stale() == []
    book.add("t", [Example("beta", _unit(i), "t") for i in range(4)])
    assert book.version("t") == 5 and len(book.examples("t")) == 3  # bounded, oldest dropped
    assert [j.version for j in book.stale()] == [5]
    book.install(
        CatalogueModel(
            "t",
            "cat1",
            0,
            (),
            np.zeros((0, 16), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 16), np.float32),
            np.zeros(0, np.intp),
        )
    )
    assert book.model("t", "cat1") is model  # an older model never replaces a newer one


def test_book_holds_models_only_for_recent_catalogues() -> None:
    book = FeedbackBook(max_examples=10, max_catalogues=2, max_models=3)
    book.add("t", [Example("alpha", _unit(1), "t")])
    for i in range(3):
        book.saw("t", f"cat{i}", ["alpha"])
    # cat0 fell out of the scope's recent catalogues: no job for it, and its model would be dropped
    assert sorted(j.catalogue for j in book.stale()) == ["cat1", "cat2"]
    for job in book.stale():
        model = train(job, c=1.0)
        assert model is not None
        book.install(model)
    book.saw("t", "cat3", ["alpha"])  # evicts cat1 and the model trained for it
    assert book.model("t", "cat1") is None and book.model("t", "cat2") is not None
    # Models loaded from the store for catalogues not seen yet are capped, least recently used first.
    for i in range(5):
        old = train(TrainingJob("u", f"old{i}", frozenset({"alpha"}), 1, book.examples("t")), c=1.0)
        assert old is not None
        book.install(old)
    assert book.counts()["models"] == 3
    assert book.model("t", "cat2") is None and book.model("u", "old4") is not None
