import copy
from typing import Any

import numpy as np
import pytest

from router.lexical import LexicalIndex, words
from router.tooltext import dense_text, description_text, lexical_text, split_identifier, tool_hash, tool_name

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_currentWeather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    },
}


@pytest.mark.parametrize(
    ("name", "words_"),
    [
        ("get_currentWeather", "get current Weather"),
        ("math.hypot", "math hypot"),
        ("HTTPServer-v2", "HTTP Server v2"),
        ("Movies_3_FindMovies", "Movies 3 Find Movies"),
        ("plain", "plain"),
    ],
)
def test_split_identifier(name: str, words_: str) -> None:
    assert split_identifier(name) == words_


def test_texts() -> None:
    assert dense_text(TOOL) == "get current Weather: Current weather for a city. Parameters: city: City name; unit"
    assert description_text(TOOL) == "Current weather for a city."
    assert lexical_text(TOOL).endswith("get current Weather celsius fahrenheit")
    assert tool_name(TOOL) == "get_currentWeather"
    assert tool_name({"type": "custom", "custom": {"name": "x"}}) is None


def test_hash_is_of_the_definition() -> None:
    same = copy.deepcopy(TOOL)
    same["function"] = dict(reversed(list(same["function"].items())))  # key order does not matter
    assert tool_hash(same) == tool_hash(TOOL)
    changed = copy.deepcopy(TOOL)
    changed["function"]["description"] = "Weather now."
    assert tool_hash(changed) != tool_hash(TOOL)


def test_words() -> None:
    assert words("Find the listings for cheap Hotels in NYC") == ["listing", "cheap", "hotel", "nyc"]
    assert words("getStockPrice") == ["stock", "price"]


def test_lexical_index_scales_best_to_one() -> None:
    index = LexicalIndex([words("weather forecast city"), words("stock price ticker"), words("city map")])
    scores = index.scores(words("weather in the city"))
    assert scores[0] == 1.0 and 0 < scores[2] < 1 and scores[1] == 0
    assert np.all(index.scores(words("unrelated")) == 0)
