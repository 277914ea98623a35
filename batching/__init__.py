"""The local engine: an iteration-level scheduler feeding one model worker process per device.

Front door: `WorkerPool`. Build it from `EngineSettings`, `await pool.start()`, then stream
`pool.generate(GenerationRequest(...))`. See `batching.errors` for the exception tree.
"""

from batching.errors import EngineError, EngineOverloaded, InvalidRequest
from batching.params import GenerationOutput, GenerationRequest, SamplingParams, TokenLogprob
from batching.pool import WorkerPool
from batching.settings import EngineSettings

__all__ = [
    "EngineError",
    "EngineOverloaded",
    "EngineSettings",
    "GenerationOutput",
    "GenerationRequest",
    "InvalidRequest",
    "SamplingParams",
    "TokenLogprob",
    "WorkerPool",
]
