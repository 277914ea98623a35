"""ToolRouter end to end with the real embedder: narrowing, survivors, learning, isolation, persistence."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from cache.embedder import SentenceEmbedder
from router import RouterSettings, ToolRouter
from tests.router.toolset import names, narrow, tools, user
from tests.support.processes import RedisServer

pytestmark = pytest.mark.model

# A request whose best zero-shot tool is not the one the application's model actually calls.
ASK = "what is going on with Tesla today?"
TAUGHT = "search_web"


def top1(**overrides: Any) -> RouterSettings:
    """Keeps exactly the best tool, so the kept set shows the ranking's winner. A coverage of one half
    lets two held-back calls calibrate a catalogue (0.98 needs 49), so a few calls can teach."""
    options: dict[str, Any] = {"coverage": 0.5, "calibration_min": 2} | overrides
    return RouterSettings(min_keep=1, max_keep=1, widen_below=0.0, fallback_below=0.0, shadow_fraction=0.0, **options)


async def winner(router: ToolRouter, tenant: str, text: str = ASK) -> str:
    narrowing = await narrow(router, tenant, tools(), user(text))
    assert narrowing.narrowed and narrowing.tools_out == 1
    return str(narrowing.tools[0]["function"]["name"])


async def teach(router: ToolRouter, tenant: str, calls: Sequence[str] = (TAUGHT,) * 8) -> None:
    """The application's model calls these tools for ASK, in this order (every fourth is held back)."""
    for called in calls:
        narrowing = await narrow(router, tenant, tools(), user(ASK))
        router.observe(tenant, narrowing, [called])
    await router.flush()


async def test_few_tools_pass_untouched(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(RouterSettings(), embedder)
    few = tools()[:16]
    narrowing = await narrow(router, "t", few, user("weather in Paris"))
    assert narrowing.tools is few and not narrowing.narrowed and narrowing.reason == "few_tools"
    assert narrowing.header == "16->16" and narrowing.band is None


async def test_narrowing_keeps_original_dicts_in_order(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(RouterSettings(shadow_fraction=0.0), embedder)
    request = tools()
    before = json.dumps(request)
    narrowing = await narrow(router, "t", request, user("What's the weather forecast for Paris this weekend?"))
    assert narrowing.narrowed and 1 <= narrowing.tools_out <= 15
    assert "get_weather_forecast" in names(narrowing.tools)
    positions = [next(i for i, t in enumerate(request) if t is kept) for kept in narrowing.tools]
    assert positions == sorted(positions)  # the very same objects, in the request's order
    assert json.dumps(request) == before  # nothing was modified
    assert narrowing.header == f"32->{narrowing.tools_out}" and narrowing.catalogue
    assert narrowing.band in ("high", "medium")


async def test_forced_pinned_and_called_tools_always_survive(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(top1(pinned=("compress_files",)), embedder)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "resize my holiday photo"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "resize_image", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "user", "content": "What's the weather forecast for Paris this weekend?"},
    ]
    forced = {"type": "function", "function": {"name": "check_bank_balance"}}
    narrowing = await narrow(router, "t", tools(), messages, tool_choice=forced)
    assert set(names(narrowing.tools)) == {
        "get_weather_forecast",
        "check_bank_balance",
        "compress_files",
        "resize_image",
    }


async def test_observed_call_teaches_a_repeated_intent(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(top1(), embedder)
    await router.start()
    assert await winner(router, "acme") != TAUGHT
    learned = REGISTRY.get_sample_value("switchyard_router_feedback_examples_total") or 0.0
    await teach(router, "acme")
    assert await winner(router, "acme") == TAUGHT
    assert (REGISTRY.get_sample_value("switchyard_router_feedback_examples_total") or 0.0) == learned + 8
    # Unrelated intents keep their zero-shot winner.
    assert await winner(router, "acme", "What's the weather forecast for Paris this weekend?") == "get_weather_forecast"
    await router.aclose()


async def test_a_feedback_model_worse_than_zero_shot_on_held_back_calls_is_not_blended(
    embedder: SentenceEmbedder,
) -> None:
    router = ToolRouter(top1(), embedder)
    await router.start()
    zero_shot = await winner(router, "acme")
    assert zero_shot != TAUGHT
    before = REGISTRY.get_sample_value("switchyard_router_blend_decisions_total", {"decision": "zero_shot"}) or 0.0
    # trained on TAUGHT, but the held-back calls (the 4th and the 8th) went to the zero-shot winner
    await teach(router, "acme", [TAUGHT, TAUGHT, TAUGHT, zero_shot, TAUGHT, TAUGHT, TAUGHT, zero_shot])
    catalogue = await router.prepare(tools())
    model = router._book.model("acme", catalogue)
    assert model is not None and not model.blend and model.held_back == 2
    assert await winner(router, "acme") == zero_shot  # learning did not move it
    after = REGISTRY.get_sample_value("switchyard_router_blend_decisions_total", {"decision": "zero_shot"})
    assert after == before + 1
    await router.aclose()


async def test_one_tenants_feedback_does_not_move_another(embedder: SentenceEmbedder) -> None:
    isolated = ToolRouter(top1(), embedder)
    await teach(isolated, "acme")
    assert await winner(isolated, "acme") == TAUGHT
    assert await winner(isolated, "globex") != TAUGHT

    shared = ToolRouter(top1(share_feedback=True), embedder)
    await teach(shared, "acme")
    assert await winner(shared, "globex") == TAUGHT


async def test_calls_to_tools_not_offered_are_ignored(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(top1(), embedder)
    narrowing = await narrow(router, "t", tools(), user(ASK))
    router.observe("t", narrowing, ["no_such_tool"])
    await router.flush()
    assert await winner(router, "t") == names(narrowing.tools)[0]


async def test_learning_survives_a_restart_with_a_file(embedder: SentenceEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "router-state.json"
    first = ToolRouter(top1(), embedder, state_path=path)
    await first.start()
    await teach(first, "acme")
    await first.aclose()
    assert path.exists()

    second = ToolRouter(top1(), embedder, state_path=path)
    await second.start()
    assert await winner(second, "acme") == TAUGHT  # the stored model, before any new feedback
    assert await winner(second, "globex") != TAUGHT
    await second.aclose()


@pytest.mark.redis
async def test_learning_survives_a_restart_and_is_shared_with_redis(
    embedder: SentenceEmbedder, redis_server: RedisServer
) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        first = ToolRouter(top1(), embedder, redis=client)
        replica = ToolRouter(top1(), embedder, redis=client)
        await first.start()
        await replica.start()
        assert await winner(replica, "acme") != TAUGHT
        await teach(first, "acme")
        await replica.flush()  # the replica's background sync, run now
        assert await winner(replica, "acme") == TAUGHT
        await first.aclose()
        await replica.aclose()

        restarted = ToolRouter(top1(), embedder, redis=client)
        await restarted.start()
        assert await winner(restarted, "acme") == TAUGHT
        assert await winner(restarted, "globex") != TAUGHT
        assert restarted._vectors.embedded == 0  # every tool vector came from Redis
        await restarted.aclose()
    finally:
        await client.aclose()


async def test_shadow_requests_go_out_whole_and_measure_recall(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(RouterSettings(shadow_fraction=1.0), embedder)
    request = tools()
    narrowing = await narrow(router, "t", request, user("What's the weather forecast for Paris this weekend?"))
    assert narrowing.shadow and narrowing.tools is request and not narrowing.narrowed
    assert "get_weather_forecast" in narrowing.kept and len(narrowing.kept) < len(request)
    router.observe("t", narrowing, ["get_weather_forecast"])
    assert router.live_recall == 1.0
    router.observe("t", narrowing, ["compress_files"])
    assert router.live_recall == 0.5
    assert REGISTRY.get_sample_value("switchyard_router_live_recall") == 0.5


async def test_no_intent_passes_the_full_list(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(RouterSettings(), embedder)
    request = tools()
    narrowing = await narrow(router, "t", request, [{"role": "system", "content": "You are helpful."}])
    assert narrowing.fallback and narrowing.tools is request and narrowing.reason == "no_intent"
    assert narrowing.header == "32->32"


async def test_unembedded_catalogue_passes_whole_then_narrows(embedder: SentenceEmbedder) -> None:
    router = ToolRouter(RouterSettings(inline_embed_max=0, shadow_fraction=0.0), embedder)
    first = await narrow(router, "t", tools(), user("What's the weather forecast for Paris this weekend?"))
    assert first.fallback and first.reason == "warming" and first.tools_out == 32
    await router.flush()  # the background task embeds the catalogue
    second = await narrow(router, "t", tools(), user("What's the weather forecast for Paris this weekend?"))
    assert second.narrowed and "get_weather_forecast" in names(second.tools)
