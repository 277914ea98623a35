"""Tool router: narrows a request's `tools` to those matching its intent, and learns from tool calls.

router = ToolRouter(RouterSettings(), embedder, redis=None, state_path=None)
await router.start()
n = await router.narrow(tenant, tools, messages, tool_choice, vector, intent=text)  # n.tools go upstream
router.observe(tenant, n, ["called_tool_name"])                              # feedback, never blocks
await router.aclose()
"""

from router.embedder import Embedder
from router.narrow import Band, KeepPolicy
from router.narrowing import Narrowing, Reason
from router.router import ToolRouter
from router.settings import RouterSettings

__all__ = ["Band", "Embedder", "KeepPolicy", "Narrowing", "Reason", "RouterSettings", "ToolRouter"]
