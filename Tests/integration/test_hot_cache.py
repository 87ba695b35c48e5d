"""The hot cache with a real client: a consumer at the tail reads from memory, one starting
from the beginning reads what the budget pushed out from the segment files, and both see every
record; `rafka-admin cache describe` and GET /metrics report the same counters."""
import random

import confluent_kafka as ck

from conftest import free_port, metrics


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
    assert scraped["rafka_read_memory_budget_bytes"] == 256 << 20
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


def test_every_client_reads_records_sent_from_the_segment_files(make_rafka):
    """With the cache off every fetch is answered from the segment files (sendfile for spans of
    16 KiB or more, a read for smaller ones): librdkafka (kcat), kafka-python and aiokafka read
    every record, in order, from the start and from inside a batch."""
    import asyncio
    import subprocess

    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AIOTopicPartition
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker = make_rafka(config_text="hot-cache-bytes: 0\n")
    rng = random.Random(11)
    values = [f"{i:06d}-".encode() + rng.randbytes(rng.randrange(10, 400)).hex().encode() for i in range(30_000)]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="lz4", batch_size=64_000,
                             linger_ms=5)
    for value in values:
        producer.send("behind", value=value)
    producer.flush()
    producer.close()

    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "behind", "-o", "beginning", "-e", "-q"],
                         capture_output=True, timeout=60, check=True).stdout
    assert out.split(b"\n")[:-1] == values

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=5000,
                             max_partition_fetch_bytes=100_000)
    consumer.assign([TopicPartition("behind", 0)])
    consumer.seek(TopicPartition("behind", 0), 12_345)
    assert [m.value for m in consumer] == values[12_345:]
    consumer.close()

    async def aiokafka_reads():
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([AIOTopicPartition("behind", 0)])
        got = []
        try:
            while len(got) < len(values):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for records in batch.values():
                    got += [r.value for r in records]
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(aiokafka_reads()) == values
    (report,) = broker.admin_json("cache", "describe")
    assert report["hits"] == 0 and report["bytesMax"] == 0, report
