#!/usr/bin/env python3
"""The hot cache against the segment files: the same reads served from memory and from disk.

Usage: benchmarks/hot_cache.py [--records 400000] [--record-bytes 1024]

1. rafka standalone with a 1 GiB hot cache; a consumer at the tail while producing (rafka-bench
   e2e at 100,000 records/s): the cache's hit ratio for tail reads.
2. --records records produced (lz4, 8 partitions), then read from the start: every fetch is
   answered from the cache.
3. The broker restarted (the cache starts empty) and the same reads again: from the segment
   files, through what the OS page cache still holds of them (Rafka drops written-back pages
   unless page-cache-tail-bytes says otherwise, so mostly from the device).
4. As root, the page cache dropped too and the reads again: from the disk.
Prints fetch latency (request to response, 8 partitions × 1 MiB per fetch) and throughput for
each, and the hit ratio `rafka-admin cache describe` reports."""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE, Broker, bench, build_rafka, rafka, say

CONFIG = "hot-cache-bytes: 1073741824\n"


def cache(broker):
    out = subprocess.run([os.path.join(RELEASE, "rafka-admin"), "--bootstrap", broker.bootstrap, "--json", "cache", "describe"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


def read_all(broker, records):
    before = cache(broker)
    result = bench("consume", broker.bootstrap, "--topic", "cached", "--from", "earliest", "--records", records, "--warmup", 0,
                   pid=broker.pid)
    after = cache(broker)
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    return result, hits / max(1, hits + misses)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build_rafka()
    rows = []
    broker = rafka(CONFIG)
    directory = broker.dir
    try:
        say("a consumer at the tail while producing 100,000 records/s")
        tail = bench("e2e", broker.bootstrap, "--topic", "tail", "--rate", 100_000, "--duration", 5, "--warmup", 1,
                     "--record-bytes", args.record_bytes)
        tail_cache = cache(broker)
        say(f"producing {args.records} records")
        produced = bench("produce", broker.bootstrap, "--topic", "cached", "--records", args.records, "--warmup", 0,
                         "--record-bytes", args.record_bytes)
        total = produced["records"]
        say("reading them back from the hot cache")
        rows.append(("hot cache", *read_all(broker, total)))
        # Keep the data directory for the restart.
        broker.proc.terminate()
        broker.proc.wait(60)
        broker.log.close()
        say("restarted: reading them from the segment files (what the OS page cache still holds)")
        broker = Broker("rafka", lambda port, d: [os.path.join(RELEASE, "rafka"), "standalone", "--data-dir",
                                                  os.path.join(directory, "data"), "--listen", f"127.0.0.1:{port}",
                                                  "--config", os.path.join(directory, "rafka.yaml"), "--log-level", "warning"],
                        data_dir=directory)
        rows.append(("segment files after a restart", *read_all(broker, total)))
        if os.geteuid() == 0:
            say("dropping the OS page cache: reading them from the disk")
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            rows.append(("segment files, page cache dropped", *read_all(broker, total)))
    finally:
        broker.stop()
    print(f"tail consumer at 100,000 records/s: hit ratio {tail_cache['hitRatio']:.4f} "
          f"({tail_cache['hits']} hits, {tail_cache['misses']} misses), end-to-end p99 {tail['endToEndLatency']['p99']:.2f} ms")
    print(f"{total} records of {args.record_bytes} bytes, lz4, 8 partitions, read from the start:")
    print("| read from | hit ratio | fetch p50 ms | fetch p99 ms | records/s | MB/s (wire) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, result, ratio in rows:
        latency = result["fetchLatency"]
        print(f"| {name} | {ratio:.2f} | {latency['p50']:.2f} | {latency['p99']:.2f} | {result['recordsPerSecond']:,.0f} | "
              f"{result['wireMegabytesPerSecond']:,.0f} |")
    cached, disk = rows[0][1]["fetchLatency"]["p50"], rows[-1][1]["fetchLatency"]["p50"]
    print(f"fetch p50: cache {cached:.2f} ms vs {rows[-1][0]} {disk:.2f} ms ({disk / cached:.1f}×)")


if __name__ == "__main__":
    main()
