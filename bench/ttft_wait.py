"""Added TTFT against the upstream's wait before its first chunk: sequential streams, gateway vs direct,
waits interleaved in the same run so drift hits every cell alike.

    python -m bench.ttft_wait                          # waits 0, 5, 20, 50 ms
    python -m bench.ttft_wait --waits 0,20 --rounds 6 --streams 50
    python -m bench.ttft_wait --spin 2                 # with 2 busy processes keeping the CPUs awake

A gateway's extra cost that grows with the wait points at what happens while it sleeps: CPU idle
states and frequency (`--spin` keeps the cores busy: if the growth goes, that was it), or work the
gateway does between the upstream's first bytes and its own first write. The relay is measured
alone (auth, cache and router off); the sim answers after `wait` ms with 4 chunks back to back.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen.processes import ManagedServer, free_port, sim_command, start_all
from bench.measure import run_loop
from bench.relay.load import Client, body
from bench.relay.run import gateway

__all__ = ["main", "measure"]


def _spin() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


async def measure(direct: str, through: str, waits: list[int], rounds: int, streams: int) -> dict[str, Any]:
    clients = {"direct": Client(direct), "gateway": Client(through)}
    ttft: dict[tuple[str, int], list[float]] = {(n, w): [] for n in clients for w in waits}
    errors = 0
    try:
        for c in clients.values():  # connections and first-use costs, not measured
            for w in waits:
                await c.one(body({"ttft_ms": w, "itl_ms": 0, "output_tokens": 4}))
        for r in range(rounds):
            for w in waits if r % 2 == 0 else list(reversed(waits)):
                for name in clients if r % 2 == 0 else list(reversed(list(clients))):
                    request = body({"ttft_ms": w, "itl_ms": 0, "output_tokens": 4})
                    for _ in range(streams):
                        rec = (await clients[name].one(request)).record
                        if rec.ok and rec.ttft is not None:
                            ttft[(name, w)].append(rec.ttft)
                        else:
                            errors += 1
    finally:
        for c in clients.values():
            await c.aclose()
    out: dict[str, Any] = {"errors": errors, "waits": {}}
    for w in waits:
        d, g = (statistics.median(ttft[(n, w)]) * 1000.0 for n in ("direct", "gateway"))
        out["waits"][str(w)] = {"direct_ttft_ms": d - w, "gateway_ttft_ms": g - w, "added_ttft_ms": g - d}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waits", default="0,5,20,50", help="the upstream's wait before its first chunk, ms")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--streams", type=int, default=60, help="sequential streams per cell and round")
    p.add_argument("--spin", type=int, default=0, help="busy processes kept running beside the measurement")
    args = p.parse_args(argv)
    waits = [int(w) for w in args.waits.split(",")]
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.spin)]
    with tempfile.TemporaryDirectory(prefix="ttft-wait-") as tmp, contextlib.ExitStack() as stack:
        port = free_port()
        sim = ManagedServer(sim_command(port, "--log-level", "warning"), port)
        start_all(stack, [sim])
        gw = gateway([("a", sim.url)], {"hedge": False}, Path(tmp))
        start_all(stack, [gw])
        for s in spinners:
            s.start()
            stack.callback(s.terminate)
        result = run_loop(measure(sim.url, gw.url, waits, args.rounds, args.streams))
    for w, cell in result["waits"].items():
        print(
            f"wait {w:>3} ms: added TTFT {cell['added_ttft_ms']:.3f} ms "
            f"(direct {cell['direct_ttft_ms']:.3f} ms over the wait, gateway {cell['gateway_ttft_ms']:.3f})"
        )
    summary = {"bench": "ttft_wait", "spin": args.spin, "rounds": args.rounds, "streams": args.streams}
    print(json.dumps({**summary, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
