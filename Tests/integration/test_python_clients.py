"""kafka-python and aiokafka producing and consuming; kafka-python's incremental fetch sessions."""
import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AIOTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import free_port, metrics


def test_kafka_python_produce_consume_every_codec(rafka):
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        topic = f"kp-{codec}"
        producer = KafkaProducer(bootstrap_servers=rafka.bootstrap, compression_type=codec, acks="all")
        futures = [producer.send(topic, key=b"k%d" % (i % 5), value=b"v%d" % i) for i in range(2000)]
        producer.flush()
        offsets = [f.get(timeout=30).offset for f in futures]
        assert offsets == list(range(2000))
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=rafka.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
        consumer.assign([TopicPartition(topic, 0)])
        values = [m.value for m in consumer]
        consumer.close()
        assert values == [b"v%d" % i for i in range(2000)], codec


def test_kafka_python_fetch_sessions(make_rafka):
    """kafka-python opens an incremental fetch session (KIP-227): after its first fetch it lists
    only the partitions whose position moved, and the broker answers only partitions with
    something new, while every record produced to a few of 300 partitions arrives in order."""
    port = free_port()
    broker = make_rafka(["--metrics-listen", f"127.0.0.1:{port}"])
    KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics([NewTopic("kp-many", 300, 1)])
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    consumer.assign([TopicPartition("kp-many", p) for p in range(300)])
    consumer.seek_to_beginning()
    for _ in range(10):
        consumer.poll(timeout_ms=100)  # the full fetch, then incremental ones
    before = metrics(port)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    got = {}
    for round in range(20):
        for p in (3, 150, 299):
            producer.send("kp-many", value=b"%d-%d" % (p, round), partition=p)
        producer.flush()
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                got.setdefault(record.partition, []).append(record.value)
    deadline = time.monotonic() + 20
    while sum(map(len, got.values())) < 60 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                got.setdefault(record.partition, []).append(record.value)
    assert got == {p: [b"%d-%d" % (p, r) for r in range(20)] for p in (3, 150, 299)}
    after = metrics(port)
    fetches = after['rafka_requests_total{api="Fetch"}'] - before['rafka_requests_total{api="Fetch"}']
    request_bytes = after['rafka_request_bytes_total{api="Fetch"}'] - before['rafka_request_bytes_total{api="Fetch"}']
    assert fetches >= 10
    # A full fetch of 300 partitions is about 10 KB; an incremental one lists a few.
    assert request_bytes / fetches < 1_000, (fetches, request_bytes)
    consumer.close()
    producer.close()


def test_kafka_python_admin(rafka):
    admin = KafkaAdminClient(bootstrap_servers=rafka.bootstrap)
    admin.create_topics([NewTopic("kp-admin", 3, 1)])
    assert "kp-admin" in admin.list_topics()
    admin.delete_topics(["kp-admin"])
    assert "kp-admin" not in admin.list_topics()
    admin.close()


def test_aiokafka_produce_consume(rafka):
    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=rafka.bootstrap, enable_idempotence=True, compression_type="lz4")
        await producer.start()
        try:
            for i in range(3000):
                await producer.send("aio", value=b"a%d" % i, key=b"k", headers=[("h", b"%d" % i)])
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=rafka.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([AIOTopicPartition("aio", 0)])
        values = []
        try:
            while len(values) < 3000:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for records in batch.values():
                    values += [(r.value, r.headers) for r in records]
        finally:
            await consumer.stop()
        assert [v for v, _ in values] == [b"a%d" % i for i in range(3000)]
        assert values[7][1] == (("h", b"7"),)

    asyncio.run(run())
