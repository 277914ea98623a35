"""`switchyard sim`: a fast, configurable, fault-injecting fake OpenAI-compatible LLM server.

Front door: `SimApp` (the ASGI app), `SimConfig` and its parts, `plan_request` (the policy that
decides what one request does), and `main` (the CLI). See `gateway/sim/cli.py` for the flags.
"""

from gateway.sim.app import SimApp, app_from_env
from gateway.sim.cli import main
from gateway.sim.config import (
    Distribution,
    Fault,
    FaultRates,
    SimConfig,
    SimOverride,
    load_profile,
    merge_config,
)
from gateway.sim.plan import Chunk, Plan, choose_fault, delivery_schedule, plan_request
from gateway.sim.stats import Cancellation, SimStats

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
