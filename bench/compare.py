"""streamfn next to its peers on one tansu broker: the same pre-filled topic, the same handler
work, each peer in its own process, CPU and peak RSS read from /proc.

    python -m bench.compare                      # every scenario and peer, 3 runs each
    python -m bench.compare --quick              # 1/20 of the records, 1 run: a smoke check
    python -m bench.compare --peers aiokafka streamfn --scenarios drain-100B
    python -m bench.compare --scenarios poison --peers faststream faststream-nack quix-skip

Runs of one scenario are interleaved over the peers (run 1 of each, then run 2, ...), so
drifting background load hits them alike; each figure is the median of the runs, with min-max.
Results go to bench/results/ (latest.json, latest.md and PNG plots).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from streamfn.bench import kit
from streamfn.bench.fill import Load, create_topic, fill_kafka
from streamfn.runtime import run_loop
from streamfn.testing.servers import TansuBroker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: A variant is a peer's runner with other settings (see BENCHMARKS.md, "Peer settings"):
#: name -> (runner, config overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # FastStream's retrying policy: a failed batch is sought back and delivered again
    "faststream-nack": ("faststream", {"ack_policy": "nack_on_error", "decoder": "raw"}),
    # the plain `faststream` peer's ACK, without decoding (separates the two effects)
    "faststream-raw": ("faststream", {"ack_policy": "ack", "decoder": "raw"}),
    # Quix's on_processing_error callback suppresses a failing record's error
    "quix-skip": ("quix", {"on_error": "skip"}),
    # Faust has no such setting: the agent's own code retries record by record, as raw does
    "faust-skip": ("faust", {"on_error": "skip"}),
}
PEERS = ("aiokafka", "streamfn", "faststream", "faust", "quix", *VARIANTS)
PARTITIONS = 12
KEYS = kit.Keys("uniform:1000")
#: In a live-stream scenario the producer starts this long after the first worker, once every
#: peer has joined its group (the slowest takes about 7 s), so latency excludes start-up.
JOIN_GRACE = 10.0

#: scenario -> the load, the handler and the plan; ``peer`` holds per-peer overrides.
SCENARIOS: dict[str, dict[str, Any]] = {
    "drain-100B": {"records": 1_000_000, "size": 100, "timeout": 45.0},
    "drain-1KB": {"records": 1_000_000, "size": 1000, "timeout": 45.0},
    "io-batch": {"records": 50_000, "size": 100, "sleep_ms": 5.0, "timeout": 20.0},
    "io-record": {
        "records": 20_000,
        "size": 100,
        "sleep_ms": 5.0,
        "per_record": True,
        "timeout": 15.0,
        "peer": {"streamfn": {"batch_size": 10}},
    },
    "poison": {"records": 50_000, "size": 100, "poison_every": 1000, "timeout": 20.0},
    "rebalance": {
        "records": 60_000,
        "size": 100,
        "rate": 5000.0,
        "join_at": 0.3,
        "stay": 3.0,
        "timeout": 45.0,
    },
}

#: What each peer runs with beyond the scenario: streamfn's key-ordered parallelism is on in
#: the I/O scenarios (that is what it is for); the others keep their defaults.
PEER_DEFAULTS: dict[str, dict[str, Any]] = {
    "streamfn": {"parallelization_factor": 10, "io_only": ["parallelization_factor"]},
}


def worker_config(
    peer: str, scenario: Mapping[str, Any], servers: str, topic: str, group: str, ids_file: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "servers": servers,
        "topic": topic,
        "group": group,
        "records": scenario["records"],
        "batch_size": scenario.get("batch_size", 500),
        "batching_window": 0.0,
        "parallelization_factor": 1,
        "sleep_ms": scenario.get("sleep_ms", 0.0),
        "per_record": scenario.get("per_record", False),
        "poison_every": scenario.get("poison_every", 0),
        "latency": bool(scenario.get("rate")),
        "ids_file": ids_file,
    }
    runner, overrides = VARIANTS.get(peer, (peer, {}))
    config.update(overrides)
    defaults = dict(PEER_DEFAULTS.get(runner, {}))
    io_only = defaults.pop("io_only", [])
    for key, value in defaults.items():
        if key not in io_only or scenario.get("sleep_ms"):
            config[key] = value
    config.update(scenario.get("peer", {}).get(runner, {}))
    return config


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(pid, cpus)


async def run_once(
    peer: str, scenario: Mapping[str, Any], servers: str, topic: str, worker_cpus: set[int] | None
) -> dict[str, Any]:
    """One peer, one run: its summary row (see :func:`kit.summarize`)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ids: dict[str, str] = {}
        group = f"{peer}-{scenario['name']}-{uuid.uuid4().hex[:8]}"  # one per run: a and b share it

        def spawn(name: str) -> kit.WorkerProcess:
            ids[name] = str(Path(tmp) / f"ids-{name}")
            config = worker_config(peer, scenario, servers, topic, group, ids[name])
            config_json = orjson.dumps(config).decode()
            runner = VARIANTS.get(peer, (peer, {}))[0]
            command = [sys.executable, "-m", f"bench.peers.{runner}_runner", config_json]
            worker = kit.WorkerProcess(command)
            pin(worker.process.pid, worker_cpus)
            return worker

        plan = kit.Plan(
            scenario["records"] - scenario["poison"],
            scenario.get("timeout", 300.0),
            scenario.get("join_at"),
            scenario.get("stay", 3.0),
        )
        progress = kit.Progress(f"{scenario['name']} {peer}", plan.expected)
        supervisor = kit.Supervisor(spawn, plan, progress)
        load0 = os.getloadavg()[0]
        rate = scenario.get("rate", 0.0)
        try:
            if rate:  # a live stream: this run's own topic, fed while the workers consume
                await create_topic(servers, topic, PARTITIONS)
            await supervisor.start()
            async with asyncio.TaskGroup() as tg:
                if rate:
                    await asyncio.sleep(JOIN_GRACE)
                    load = Load(scenario["records"], scenario["size"], KEYS, rate)
                    tg.create_task(fill_kafka(servers, topic, load))
                run = await supervisor.finish()
        finally:
            progress.close()
        row = kit.summarize(run, scenario["records"], ids.values(), scenario["poison"])
        row["load_avg_1m"] = round((load0 + os.getloadavg()[0]) / 2, 2)
        extras = {
            k: v
            for w in run["workers"].values()
            for k, v in w.items()
            if k in ("ack_policy", "commits_refused", "mode", "error", "handler_errors")
        }
        return {"peer": peer, **row, **extras}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min-max of throughput over runs; medians of the rest."""
    rates = [r["records_per_s"] for r in runs]
    median, low, high = kit.median_spread(rates)
    row: dict[str, Any] = {"peer": runs[0]["peer"], "records_per_s": round(median)}
    row["spread"] = f"{round(low):,}-{round(high):,}"
    for key in (
        "first_record_s",
        "cpu_s",
        "peak_rss_mb",
        "duplicates",
        "lost",
        "dead_lettered",
        "pause_s",
        "isolate_p50_s",
        "p50_ms",
        "p99_ms",
        "load_avg_1m",
        "handler_errors",
    ):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            row[key] = round(kit.median_spread(values)[0], 3)
    for key in ("ack_policy", "commits_refused", "mode", "error"):
        if key in runs[0]:
            row[key] = runs[0][key]
    row["timed_out"] = sum(bool(r["timed_out"]) for r in runs)
    row["runs"] = len(runs)
    return row


def run_scenario(
    name: str,
    peers: list[str],
    runs: int,
    servers: str,
    scale: float,
    worker_cpus: set[int] | None,
    failures: dict[str, str],
    per_run: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, kit.Timeline]]:
    """Every run of one scenario, interleaved over the peers; a row per peer (and, into
    ``per_run``, each run's own row by peer)."""
    scenario = {**SCENARIOS[name], "name": name}
    scenario["records"] = max(2000, int(scenario["records"] * scale))
    scenario["poison"] = (
        scenario["records"] // scenario["poison_every"] if scenario.get("poison_every") else 0
    )
    topic = f"cmp-{name.lower()}-{uuid.uuid4().hex[:8]}"
    if not scenario.get("rate"):  # the same pre-filled backlog for every peer and run
        load = Load(scenario["records"], scenario["size"], KEYS)
        run_loop(create_topic(servers, topic, PARTITIONS))
        filled = run_loop(fill_kafka(servers, topic, load))
        print(
            f"{name}: {scenario['records']:,} x {scenario['size']} B filled in "
            f"{filled.seconds:.1f} s",
            file=sys.stderr,
        )
    by_peer: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    timelines: dict[str, kit.Timeline] = {}
    for _ in range(runs):
        for peer in peers:
            key = f"{name}/{peer}"
            if key in failures:
                continue
            try:
                run_topic = (
                    f"{topic}-{peer}-{len(by_peer[peer])}" if scenario.get("rate") else topic
                )
                row = run_loop(run_once(peer, scenario, servers, run_topic, worker_cpus))
            except RuntimeError as exc:
                failures[key] = str(exc)[-1500:]
                print(f"{key} failed: {failures[key]}", file=sys.stderr)
                continue
            timelines[peer] = row.pop("_timeline")
            row.pop("_histogram")
            by_peer[peer].append(row)
    rows = [{"scenario": name, **aggregate(r)} for r in by_peer.values() if r]
    if per_run is not None:
        per_run.update(by_peer)
    return rows, timelines


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "aiokafka",
        "faststream",
        "faust-streaming",
        "quixstreams",
        "confluent-kafka",
        "uvloop",
        "streamfn",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_results(
    report: dict[str, Any], timelines: dict[str, dict[str, kit.Timeline]], out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(kit.dumps(report))
    columns = [
        "scenario",
        "peer",
        "records_per_s",
        "spread",
        "first_record_s",
        "cpu_s",
        "peak_rss_mb",
        "duplicates",
        "lost",
        "dead_lettered",
        "isolate_p50_s",
        "pause_s",
        "p99_ms",
        "handler_errors",
        "timed_out",
        "runs",
    ]
    (out / "latest.txt").write_text(kit.render_table(report["rows"], columns) + "\n")
    groups: dict[str, dict[str, tuple[float, float, float]]] = {}
    for row in report["rows"]:
        low, high = (float(x.replace(",", "")) for x in row["spread"].split("-"))
        groups.setdefault(row["scenario"], {})[row["peer"]] = (row["records_per_s"], low, high)
    try:
        kit.plot_bars(out / "throughput.png", "records/s (median of runs, min-max)", groups)
        if "rebalance" in timelines:
            kit.plot(
                out / "rebalance.png",
                "a 2nd worker joins at 30%, leaves 3 s later",
                timelines["rebalance"],
            )
    except RuntimeError as exc:
        print(f"no plots: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1/20 of the records, 1 run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the broker and the worker to different CPUs",
    )
    args = parser.parse_args(argv)
    scale, runs = (0.05, 1) if args.quick else (1.0, args.runs)
    cpus = sorted(os.sched_getaffinity(0))
    split = len(cpus) > 1 and not args.no_pin
    worker_cpus = {cpus[-1]} if split else None
    report: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": runs,
        "scale": scale,
        "pinned": split,
        "rows": [],
    }
    failures: dict[str, str] = {}
    timelines: dict[str, dict[str, kit.Timeline]] = {}
    with TansuBroker() as broker:
        if split:
            pin(broker._process.pid, set(cpus[:-1]))  # type: ignore[union-attr]
            pin(os.getpid(), set(cpus[:-1]))
        for name in args.scenarios:
            report.setdefault("per_run", {})[name] = per_run = {}
            rows, timelines[name] = run_scenario(
                name, args.peers, runs, broker.address, scale, worker_cpus, failures, per_run
            )
            report["rows"].extend(rows)
            print(kit.render_table(rows), file=sys.stderr)
            report["failures"] = failures
            report["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            write_results(report, timelines, args.out)  # after each scenario: a partial run counts
    print((args.out / "latest.txt").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
