"""Rapid reset (HEADERS + DATA + RST_STREAM, stream after stream on one connection) from another process and
address, while a healthy client sends Classify at a fixed rate on a connection of its own: the healthy calls'
codes and p99 against their quiet p99, and the CPU each side spends (the attacker shares the machine's cores)."""

from __future__ import annotations

import argparse
import multiprocessing
import time

import grpc

from bench.hostile.measure import CLASSIFIER, OWN_CONNECTION, counts, latencies, percentile, report, tree_cpu_s
from bench.hostile.raw_h2 import ATTACKER
from bench.hostile.server import Site, served
from bench.rapid_reset import flood_process, grpc_frame
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

RATE = 20  # healthy Classify calls a second


def _cpu(site: Site) -> tuple[float, float]:
    """(the server's CPU seconds, nginx's), now."""
    return site.server.cpu_s(), 0.0 if site.nginx_pid is None else tree_cpu_s(site.nginx_pid)


def reset(args: argparse.Namespace) -> None:
    seconds = 5 if args.quick else 20
    body = grpc_frame(pb.ClassifyRequest(model=CLASSIFIER, texts=["a fine film"]).SerializeToString())
    spawn = multiprocessing.get_context("spawn")  # not fork: this process runs grpc's threads
    # The default cap per connection (128, what a direct client may keep in flight) and compose's 32
    for limit, flags in (("off", ["--max-streams-per-connection", "100000"]), ("on", []),
                         ("on, 32 per connection", ["--max-streams-per-connection", "32"])):
        with served(args, flags) as site, grpc.insecure_channel(site.target, options=OWN_CONNECTION) as ch:
            stub = pb_grpc.InferenceStub(ch)
            latencies(stub, 2, RATE)  # warm-up
            quiet, quiet_codes = latencies(stub, seconds, RATE)
            host, port = site.target.rsplit(":", 1)
            results = spawn.Queue()
            attacker = spawn.Process(target=flood_process, args=(host, int(port), "/rnnserve.v1.Inference/Classify",
                                                                 body, seconds + 2, ATTACKER, results))
            attacker.start()
            time.sleep(1)
            (server0, nginx0), t0 = _cpu(site), time.monotonic()
            loud, loud_codes = latencies(stub, seconds, RATE)
            (server1, nginx1), wall = _cpu(site), time.monotonic() - t0
            flood = results.get(timeout=60)
            attacker.join(30)
            rate = flood["sent"] / flood["seconds"]
            report("reset", limit, site.via, flood_streams_per_s=round(rate), flood_connections=flood["connections"],
                   flood_goaways=flood["goaways"], attacker_cores=round(flood["cpu_s"] / flood["seconds"], 2),
                   server_cores_flooded=round((server1 - server0) / wall, 2),
                   server_us_per_reset=round(1e6 * (server1 - server0) / wall / rate, 1),
                   **({"nginx_cores_flooded": round((nginx1 - nginx0) / wall, 2)} if site.nginx_pid else {}),
                   healthy_quiet=counts(quiet_codes), healthy_flooded=counts(loud_codes),
                   p99_quiet_ms=percentile(quiet, 99), p99_flooded_ms=percentile(loud, 99),
                   p99_ratio=round(percentile(loud, 99) / percentile(quiet, 99), 2), **site.server.summary())
