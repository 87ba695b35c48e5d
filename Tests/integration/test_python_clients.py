"""kafka-python and aiokafka producing and consuming."""
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AIOTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def test_kafka_python_produce_consume_every_codec(rafka):
    for codec in [None, "gzip", "lz4", "zstd"]:
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
