#!/usr/bin/env python3
"""How long real consumers pause when the ring changes: partitions that moved and partitions that did not.

A local cluster of real processes (tools/cluster: 1 controller, 3 data nodes) carries a steady
load from a confluent-kafka producer (every partition gets a record each 10 ms, stamped with the
time it was sent) read by a librdkafka consumer and a kafka-python consumer, while a fourth data
node joins and, --gap seconds later, a data node leaves with SIGTERM. For each event and each
consumer it prints, over the partitions the event moved and over those it did not, the worst
end-to-end latency of a record sent in the --gap seconds after the event (the worst of all
partitions, and the median of each partition's worst). A consumer that is fenced
(FENCED_LEADER_EPOCH) on a partition that did not move pauses it for a metadata refresh and an
OffsetForLeaderEpoch check; one that is not reads on. Asserts nothing about speed.

Usage: benchmarks/client_moves.py [--partitions 48] [--gap 6] [--out FILE.md] [--no-build]
$RAFKA_BIN (with rafka-admin beside it) picks another build, e.g. an older one to compare.
"""
import argparse
import os
import signal
import statistics
import sys
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import build_rafka, ensure_pip, say
from ring_change import TOPIC, report_on_cluster, wait_for

SEND_INTERVAL = 0.01


def produce(bootstrap, partitions, stop):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": 1})
    while not stop.is_set():
        started = time.time()
        for p in range(partitions):
            producer.produce(TOPIC, value=repr(time.time()).encode(), partition=p)
        producer.poll(0)
        time.sleep(max(0.0, SEND_INTERVAL - (time.time() - started)))
    producer.flush(10)


def read_librdkafka(bootstrap, partitions, stop, seen):
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "client-moves", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in range(partitions)])
    while not stop.is_set():
        message = consumer.poll(0.1)
        if message is not None and not message.error():
            seen[message.partition()].append((time.time(), float(message.value())))
    consumer.close()


def read_kafka_python(bootstrap, partitions, stop, seen):
    import kafka
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    consumer.assign([kafka.TopicPartition(TOPIC, p) for p in range(partitions)])
    consumer.seek_to_end()
    while not stop.is_set():
        for tp, messages in consumer.poll(100).items():
            now = time.time()
            seen[tp.partition].extend((now, float(m.value)) for m in messages)
    consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=48)
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between events (and before the first)")
    parser.add_argument("--out", help="also write the report as Markdown to this file")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    ensure_pip("confluent_kafka", "confluent-kafka")
    ensure_pip("kafka", "kafka-python")
    if not args.no_build and "RAFKA_BIN" not in os.environ:
        build_rafka()
    report_on_cluster(1, 3, lambda c: run(c, args), args.out)


def run(c, args):
    wait_for(lambda: len(c.active_nodes()) == 3, "three active data nodes")
    if c.admin("topics", "create", TOPIC, "--partitions", str(args.partitions)) is None:
        sys.exit(f"cannot create {TOPIC}")
    wait_for(lambda: len(c.leaders()) == args.partitions and -1 not in c.leaders().values(), "every partition led")
    bootstrap = c.bootstrap
    stop = threading.Event()
    seen = {"librdkafka": defaultdict(list), "kafka-python": defaultdict(list)}
    threads = [threading.Thread(target=produce, args=(bootstrap, args.partitions, stop)),
               threading.Thread(target=read_librdkafka, args=(bootstrap, args.partitions, stop, seen["librdkafka"])),
               threading.Thread(target=read_kafka_python, args=(bootstrap, args.partitions, stop, seen["kafka-python"]))]
    for thread in threads:
        thread.start()
    events = []
    try:
        time.sleep(args.gap)
        before = c.leaders()
        say("a fourth data node joins")
        started = time.time()
        c.tool("add-node")
        wait_for(lambda: 104 in c.leaders().values(), "node 104 leading partitions")
        time.sleep(args.gap)
        after = c.leaders()
        events.append(("a node joins", started, {p for p in after if after[p] != before[p]}))
        before = after
        say("node 102 leaves (SIGTERM)")
        started = time.time()
        os.kill(c.pid(102), signal.SIGTERM)
        wait_for(lambda: 102 not in c.leaders().values(), "node 102's partitions handed over")
        time.sleep(args.gap)
        after = c.leaders()
        events.append(("a node leaves", started, {p for p in after if after[p] != before[p]}))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    lines = [f"Consumers across a join and a leave: {args.partitions} partitions, a record per partition every "
             f"{SEND_INTERVAL * 1000:.0f} ms (`benchmarks/client_moves.py`). Worst end-to-end latency of the records sent "
             f"in the {args.gap:.0f} s after each event, in ms: the worst partition's, and the median of each partition's worst.",
             "", "| event | consumer | moved: partitions | moved: worst | moved: median | not moved: partitions | not moved: worst | not moved: median |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, started, moved in events:
        for client, records in seen.items():
            def worsts(partitions):
                return [max(((received - sent) * 1000 for received, sent in records[p] if started <= sent <= started + args.gap),
                            default=float("nan")) for p in partitions]
            cells = []
            for group in (sorted(moved), sorted(set(range(args.partitions)) - moved)):
                values = worsts(group)
                cells += [str(len(group)), f"{max(values, default=float('nan')):.0f}", f"{statistics.median(values):.0f}" if values else "-"]
            lines.append(f"| {name} | {client} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
