#!/usr/bin/env python3
"""Memory per idle partition: rafka standalone's resident memory before and after a topic of
--partitions partitions is created (and every partition opened), per partition; then what
asking for every partition's end costs, as a lag monitor does.

Usage: benchmarks/idle_partitions.py [--partitions 10000]

Prints the resident memory (RSS) before, after, and the difference per partition, with the
time the creation took and the open file descriptors; the broker's CPU while idle over 30 s
(--idle-seconds) with those partitions; then, for five ListOffsets requests for
the latest offset of every partition (librdkafka's `offsets_for_times` with -1, one request),
the broker's mean time per request from its metrics (last byte read to response written) and
the client's, which includes librdkafka's own work."""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE, build_rafka, ensure_pip, process_sample, rafka, say, scrape


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    ensure_pip("confluent_kafka", "confluent-kafka")
    if not args.no_build:
        build_rafka()
    broker = rafka(metrics=True)
    try:
        time.sleep(2)
        _, before = process_sample(broker.pid)
        start = time.monotonic()
        subprocess.run([os.path.join(RELEASE, "rafka-admin"), "--bootstrap", broker.bootstrap, "topics", "create", "idle",
                        "--partitions", str(args.partitions)], check=True, stdout=subprocess.DEVNULL)
        created = time.monotonic() - start
        # Let allocations settle (the metadata snapshot, the first maintenance passes).
        time.sleep(5)
        cpu_before, after = process_sample(broker.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = (process_sample(broker.pid)[0] - cpu_before) / args.idle_seconds
        descriptors = len(os.listdir(f"/proc/{broker.pid}/fd"))
        broker_ms, client_ms = list_ends(broker, args.partitions)
    finally:
        broker.stop()
    per = (after - before) / args.partitions
    print(f"partitions={args.partitions} create_s={created:.2f} rss_before_MiB={before / 2**20:.1f} "
          f"rss_after_MiB={after / 2**20:.1f} per_partition_KiB={per / 1024:.1f} open_fds={descriptors} "
          f"idle_cpu_percent_of_a_core={100 * idle_cpu:.2f}")
    print(f"list_offsets_latest partitions={args.partitions} broker_ms_per_request={broker_ms:.1f} "
          f"client_ms_per_request={client_ms:.1f}")


def list_ends(broker, partitions, requests=5):
    """ListOffsets (latest) for every partition of `idle`, `requests` times: the broker's mean
    time per request (its metrics) and the client's (ms)."""
    import confluent_kafka as ck
    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle-partitions"})
    try:
        asked = [ck.TopicPartition("idle", p, -1) for p in range(partitions)]
        consumer.offsets_for_times(asked, timeout=60)  # the client's metadata, once
        before = scrape(broker)
        start = time.monotonic()
        for _ in range(requests):
            answers = consumer.offsets_for_times(asked, timeout=60)
            assert all(a.error is None and a.offset == 0 for a in answers), "every idle partition ends at 0"
        client = (time.monotonic() - start) / requests
        after = scrape(broker)
    finally:
        consumer.close()
    key = 'rafka_request_duration_seconds_sum{api="ListOffsets"}'
    count = 'rafka_request_duration_seconds_count{api="ListOffsets"}'
    broker_seconds = (after[key] - before.get(key, 0)) / max(1, after[count] - before.get(count, 0))
    return broker_seconds * 1000, client * 1000


if __name__ == "__main__":
    main()
