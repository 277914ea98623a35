"""The admin API's answer to a key change the store could not make."""

from __future__ import annotations

import pytest

from gateway.admin.api import Conflict, _key_change
from gateway.admin.store import KeyConflict
from gateway.errors import NotFound


async def _raises_conflict() -> None:
    raise KeyConflict("key_1")


async def _returns(value: object) -> object:
    return value


async def test_a_change_that_lost_a_race_is_a_409_naming_the_key() -> None:
    with pytest.raises(Conflict) as caught:
        await _key_change("key_1", _raises_conflict())
    assert caught.value.status == 409 and caught.value.param == "key_id" and "key_1" in caught.value.message


async def test_a_change_of_a_missing_key_is_a_404() -> None:
    with pytest.raises(NotFound) as caught:
        await _key_change("key_2", _returns(None))
    assert caught.value.status == 404 and caught.value.code == "not_found" and "key_2" in caught.value.message


async def test_a_change_that_went_through_returns_what_the_store_returned() -> None:
    assert await _key_change("key_3", _returns(("secret", "record"))) == ("secret", "record")
