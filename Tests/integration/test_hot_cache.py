"""The hot cache with a real client: a consumer at the tail reads from memory, one starting
from the beginning reads what the budget pushed out from the segment files, and both see every
record; `rafka-admin cache describe` and GET /metrics report the same counters."""
import random
import re
import urllib.request

import confluent_kafka as ck

from conftest import free_port


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)(\{[^}]*\})? (\S+)$', line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def consume(consumer, want, timeout=30):
    got = []
    while len(got) < want:
        # Asks for exactly what is missing: consume() waits its whole timeout for a fuller batch.
        batch = consumer.consume(min(1000, want - len(got)), timeout=timeout)
        assert batch, f"no records after {len(got)} of {want}"
        for msg in batch:
            assert msg.error() is None, msg.error()
            got.append(msg.value().decode())
    return got


def test_tail_consumers_read_from_memory_and_the_rest_from_disk(make_rafka):
    metrics_port = free_port()
    budget = 1 << 20
    broker = make_rafka(["--metrics-listen", f"127.0.0.1:{metrics_port}"], config_text=f"hot-cache-bytes: {budget}\n")
    # zstd: librdkafka compresses with lz4 only for brokers that serve consumer groups.
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "zstd", "linger.ms": 2})
    producer.produce("cached", value=b"first")
    assert producer.flush(30) == 0
    tail = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "tail", "fetch.wait.max.ms": 50, "enable.auto.commit": False})
    tail.assign([ck.TopicPartition("cached", 0, ck.OFFSET_BEGINNING)])
    assert consume(tail, 1) == ["first"]

    # Rounds of 500 records, each read by the tail consumer before the next: every one of its
    # reads is at the tail, within the budget. Random hex compresses about 2:1, so the whole
    # topic (about 2 MB on disk) is more than the budget.
    rng = random.Random(5)
    values = [f"{i:06d}-" + rng.randbytes(100).hex() for i in range(20_000)]
    tail_got = []
    for start in range(0, len(values), 500):
        for value in values[start:start + 500]:
            producer.produce("cached", value=value.encode())
        assert producer.flush(30) == 0
        tail_got += consume(tail, 500)
    tail.close()
    assert tail_got == values

    (report,) = broker.admin_json("cache", "describe")
    assert report["hits"] > 0 and report["hitRatio"] >= 0.99, report
    assert report["bytes"] <= budget and report["evictedForBytes"] > 0, report

    # From the beginning: the oldest batches left the cache, so they come from the segments.
    behind = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "behind", "enable.auto.commit": False})
    behind.assign([ck.TopicPartition("cached", 0, ck.OFFSET_BEGINNING)])
    assert consume(behind, 20_001) == ["first"] + values
    behind.close()
    (after,) = broker.admin_json("cache", "describe")
    assert after["misses"] > report["misses"], after

    scraped = metrics(metrics_port)
    assert scraped["rafka_hot_cache_misses_total"] == after["misses"]
    assert scraped["rafka_hot_cache_hits_total"] >= after["hits"]
    assert scraped['rafka_hot_cache_evictions_total{reason="budget"}'] >= after["evictedForBytes"]
    assert scraped["rafka_hot_cache_budget_bytes"] == budget
    assert scraped["rafka_partitions_served"] >= 1
    assert scraped["process_resident_memory_bytes"] > 0


def test_a_cache_of_zero_bytes_is_off(make_rafka):
    broker = make_rafka(config_text="hot-cache-bytes: 0\n")
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        producer.produce("uncached", value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    consumer.assign([ck.TopicPartition("uncached", 0, ck.OFFSET_BEGINNING)])
    assert consume(consumer, 100) == [str(i) for i in range(100)]
    consumer.close()
    (report,) = broker.admin_json("cache", "describe")
    assert report["bytes"] == 0 and report["hits"] == 0 and report["bytesMax"] == 0, report
