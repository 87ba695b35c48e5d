#!/usr/bin/env python3
"""What producers and consumers see while the ring changes under load.

A local cluster of real processes (tools/cluster: 3 controllers, 3 data nodes) carries
rafka-bench e2e (open loop, lz4, 1 ms linger) while, --gap seconds apart: a fourth data node
joins, a data node leaves with SIGTERM, and a data node is killed with -9 and started again
--down seconds later. rafka-bench follows each partition to its new leader as Kafka clients do
(it asks where a refused partition went and sends or reads there).

Prints each second of the run (records acknowledged and received, the worst end-to-end latency
completed in it), then for each event: the partitions whose leader changed, the worst latency in
the --gap seconds after it and how long the worst latency stayed above 3 × its median before the
events; and the run's summary: every acknowledged record received or not, e2e p50/p99/p99.9/max,
the retries and errors rafka-bench counted. Asserts nothing about speed.

Usage: benchmarks/ring_change.py [--rate 50000] [--record-bytes 1024] [--partitions 48]
                                 [--gap 8] [--down 1] [--out FILE.md] [--no-build]
Cluster processes log to a temporary directory, removed at the end.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE, ROOT, build_rafka, say

CLUSTER = os.path.join(ROOT, "tools", "cluster")
ADMIN = os.path.join(RELEASE, "rafka-admin")
TOPIC = "ring-change"


class Cluster:
    def __init__(self, directory, controllers, nodes):
        self.dir = directory
        self.tool("up", "--controllers", str(controllers), "--nodes", str(nodes))

    def tool(self, *args):
        subprocess.run([CLUSTER, *args, "--dir", self.dir], check=True, capture_output=True, timeout=120)

    @property
    def info(self):
        with open(os.path.join(self.dir, "cluster.json")) as f:
            return json.load(f)

    @property
    def bootstrap(self):
        return self.info["bootstrap"]

    def admin(self, *args):
        out = subprocess.run([ADMIN, "--bootstrap", self.bootstrap, "--json", *args], capture_output=True, text=True,
                             timeout=60)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def leaders(self):
        topics = self.admin("topics", "describe", TOPIC) or [{"partitions": []}]
        return {p["partition"]: p["leader"] for p in topics[0]["partitions"]}

    def active_nodes(self):
        described = self.admin("cluster", "describe") or {"nodes": []}
        return sorted(n["id"] for n in described["nodes"] if n["state"] == "active")

    def pid(self, node):
        return next(p["pid"] for p in self.info["processes"] if p["id"] == node)


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=48)
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between events (and before the first)")
    parser.add_argument("--down", type=float, default=1.0, help="seconds the killed node stays down")
    parser.add_argument("--out", help="also write the report as Markdown to this file")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build_rafka()
    warmup = 2
    report_on_cluster(3, 3, lambda c: run(c, args, warmup), args.out)


def report_on_cluster(controllers, nodes, measure, out=None):
    """Runs `measure` on a new local cluster (removed after), prints the report it returns and
    writes it to `out` too, if given."""
    with tempfile.TemporaryDirectory(prefix="rafka-cluster-") as directory:
        say(f"starting {controllers} controller(s) and {nodes} data nodes")
        c = Cluster(directory, controllers, nodes)
        try:
            report = measure(c)
        finally:
            subprocess.run([CLUSTER, "down", "--dir", directory], capture_output=True, timeout=120)
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report + "\n")


def run(c, args, warmup):
    wait_for(lambda: len(c.active_nodes()) == 3, "three active data nodes")
    if c.admin("topics", "create", TOPIC, "--partitions", str(args.partitions)) is None:
        sys.exit(f"cannot create {TOPIC}")
    wait_for(lambda: len(c.leaders()) == args.partitions and -1 not in c.leaders().values(), "every partition led")
    seconds = 4 * args.gap
    bootstrap = c.bootstrap  # the three first nodes; a joining node is added to cluster.json
    say(f"rafka-bench e2e at {args.rate:,} records/s for {warmup} + {seconds:.0f} s; events every {args.gap} s")
    command = [os.path.join(RELEASE, "rafka-bench"), "e2e", "--bootstrap", bootstrap, "--topic", TOPIC,
               "--rate", str(args.rate), "--record-bytes", str(args.record_bytes), "--compression", "lz4",
               "--linger-ms", "1", "--warmup", str(warmup), "--duration", str(seconds), "--json"]
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    events = []
    try:
        nodes = c.active_nodes()
        plan = [("join", None), ("leave (SIGTERM)", nodes[1]), ("kill -9, restarted", nodes[2])]
        for index, (kind, node) in enumerate(plan):
            time.sleep(max(0.0, started + warmup + (index + 1) * args.gap - time.time()))
            before = c.leaders()
            at = time.time()
            say(f"{kind} {node or ''}")
            if kind == "join":
                c.tool("add-node")
                node = max(p["id"] for p in c.info["processes"] if p["role"] == "node")
            elif kind.startswith("leave"):
                os.kill(c.pid(node), signal.SIGTERM)
            else:
                c.tool("kill", "--node", str(node))
                time.sleep(args.down)
                c.tool("start", "--node", str(node))
            events.append({"kind": kind, "node": node, "at": at, "before": before})
        # Leaders as they settled: just before the next event, or the end of the run.
        time.sleep(max(0.0, started + warmup + seconds - 1 - time.time()))
        events[-1]["after"] = c.leaders()
        out, err = bench.communicate(timeout=seconds + 300)
    finally:
        bench.kill()
    if bench.returncode != 0:
        sys.exit(f"rafka-bench failed: {err.strip()}")
    for index in range(len(events) - 1):
        events[index]["after"] = events[index + 1]["before"]
    shown = " ".join(["rafka-bench", *command[1:-1]]).replace(bootstrap, "DATA-NODES")
    return describe(json.loads(out), events, args, shown)


def describe(result, events, args, command):
    timeline = result["timeline"]
    first_event = events[0]["at"]
    quiet = [s["maxLatencyMs"] for s in timeline if s["at"] <= first_event][2:]  # past the first seconds
    baseline = statistics.median(quiet) if quiet else 0
    lines = [
        f"# The ring changing under load — {time.strftime('%Y-%m-%d')}",
        "",
        f"`benchmarks/ring_change.py{' ' if sys.argv[1:] else ''}{' '.join(sys.argv[1:])}` on this machine "
        f"({os.cpu_count()} cores): 3 controllers and 3 data nodes of `tools/cluster` (real processes on loopback, "
        f"replication factor 1), a topic of {args.partitions} partitions. `{command}` "
        f"({result['recordsPerBatch']} records per batch), while a data node joins, one leaves with SIGTERM, and one is "
        f"killed with -9 and started again {args.down:g} s later, {args.gap:g} s apart.",
        "",
        "| event | node | partitions whose leader changed | worst e2e latency in the next "
        f"{args.gap:g} s, ms | seconds above 3 × the quiet median ({baseline:.1f} ms) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for event in events:
        window = [s for s in timeline if event["at"] < s["at"] <= event["at"] + args.gap]
        worst = max((s["maxLatencyMs"] for s in window), default=0)
        disturbed = sum(1 for s in window if s["maxLatencyMs"] > 3 * baseline)
        moved = sum(1 for p, leader in event["after"].items() if event["before"].get(p) != leader)
        lines.append(f"| {event['kind']} | {event['node']} | {moved} of {len(event['after'])} | {worst:,.0f} | {disturbed} |")
    latency = result["endToEndLatency"]
    every = latency["count"] == result["records"] and result["unmatchedBatches"] == 0
    lines += [
        "",
        f"- {result['records']:,} records measured at {result['recordsPerSecond']:,.0f} records/s; "
        f"{'every acknowledged record was received' if every else 'NOT every acknowledged record was received'} "
        f"(e2e latencies {latency['count']:,}, unmatched batches {result['unmatchedBatches']}); "
        f"batches that arrived twice (written, their answer lost with the connection, sent again): "
        f"{result['unacknowledgedBatches']}.",
        f"- e2e latency over the whole run, ms: p50 {latency['p50']:.2f}, p99 {latency['p99']:.2f}, "
        f"p99.9 {latency['p999']:.2f}, max {latency['max']:.1f}.",
        f"- Retries (a batch sent, or a partition's reader sent, to its leader again): "
        f"{', '.join(f'{k} {v}' for k, v in sorted(result['retries'].items())) or 'none'}.",
        f"- Errors: {', '.join(f'{k} {v}' for k, v in sorted(result['errors'].items())) or 'none'}.",
        "",
        "Each second (acknowledged, received, worst e2e latency completed in it):",
        "",
        "| s | acknowledged | received | worst ms | event |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    start = timeline[0]["at"] - 1 if timeline else 0
    for second in timeline:
        marks = [f"{e['kind']} {e['node']}" for e in events if second["at"] - 1 < e["at"] <= second["at"]]
        lines.append(f"| {second['at'] - start:.0f} | {second['records']:,} | {second.get('consumed') or 0:,} | "
                     f"{second['maxLatencyMs']:,.1f} | {', '.join(marks)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
