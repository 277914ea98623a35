"""`switchyard sim`: a fast, configurable, fault-injecting fake OpenAI-compatible LLM server,
which also speaks Anthropic's Messages API (`sim/messages.py`).

Front door: `SimApp` (the ASGI app), `SimConfig` and its parts, `plan_request` (the policy that
decides what one request does), and `main` (the CLI). See `sim/cli.py` for the flags.
"""

from sim.app import SimApp, app_from_env
from sim.cli import main
from sim.config import (
    Distribution,
    Fault,
    FaultRates,
    SimConfig,
    SimOverride,
    load_profile,
    merge_config,
)
from sim.plan import Chunk, Plan, choose_fault, delivery_schedule, plan_request
from sim.stats import Cancellation, SimStats

__all__ = [
    "Cancellation",
    "Chunk",
    "Distribution",
    "Fault",
    "FaultRates",
    "Plan",
    "SimApp",
    "SimConfig",
    "SimOverride",
    "SimStats",
    "app_from_env",
    "choose_fault",
    "delivery_schedule",
    "load_profile",
    "main",
    "merge_config",
    "plan_request",
]
