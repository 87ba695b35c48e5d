"""confluent-kafka (librdkafka 2.x): idempotent acks=all producing with keys, headers and
timestamps; compressed batches; consuming; offsets by timestamp; the admin API."""
import time

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from conftest import stored_codecs, wait_for


def produce(bootstrap, topic, count, **config):
    producer = ck.Producer({"bootstrap.servers": bootstrap, **config})
    errors, delivered = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or (msg.partition(), msg.offset()))

    for i in range(count):
        producer.produce(
            topic, key=f"k{i % 13}".encode(), value=f"value-{i}".encode(), headers=[("seq", str(i).encode()), ("empty", None)],
            timestamp=1_700_000_000_000 + i, on_delivery=on_delivery)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    return delivered


def consume_all(bootstrap, topic, partitions, expected, timeout=30):
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "rafka-test", "enable.auto.commit": False})
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1):
            assert msg.error() is None, msg.error()
            messages.append(msg)
    consumer.close()
    return messages


@pytest.mark.parametrize("codec, code", [("gzip", 1), ("snappy", 2), ("zstd", 4)])
def test_compressed_batches_are_kept_as_produced(rafka, codec, code):
    """librdkafka 2.16 sends gzip, snappy (raw) and zstd batches compressed, and they are stored
    so and read back. (Its lz4 it sends uncompressed until the broker lists FindCoordinator, as
    the README says; kcat's librdkafka 2.0 sends gzip, snappy and lz4 uncompressed, since for them
    it wants Produce v0, which Rafka, like Kafka 4, does not serve.)"""
    topic = f"ck-{codec}"
    admin = AdminClient({"bootstrap.servers": rafka.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    produce(rafka.bootstrap, topic, 2000, **{"compression.type": codec, "linger.ms": 20})
    assert stored_codecs(rafka, topic) == {code}
    messages = consume_all(rafka.bootstrap, topic, 1, 2000)
    assert [m.value() for m in messages] == [f"value-{i}".encode() for i in range(2000)]


def test_idempotent_acks_all_with_keys_headers_timestamps(rafka):
    admin = AdminClient({"bootstrap.servers": rafka.bootstrap})
    admin.create_topics([NewTopic("ck-idem", num_partitions=4, replication_factor=1)])["ck-idem"].result(30)
    delivered = produce(rafka.bootstrap, "ck-idem", 20_000, **{"enable.idempotence": True, "acks": "all", "compression.type": "lz4", "linger.ms": 5})
    assert len(delivered) == 20_000
    messages = consume_all(rafka.bootstrap, "ck-idem", 4, 20_000)
    assert len(messages) == 20_000
    seen = set()
    for msg in messages:
        i = int(msg.value().decode().split("-")[1])
        assert msg.key() == f"k{i % 13}".encode()
        assert msg.headers() == [("seq", str(i).encode()), ("empty", None)]
        assert msg.timestamp() == (ck.TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + i)
        seen.add(i)
    assert seen == set(range(20_000)), "every record exactly once"
    # Per-partition offsets are dense: no duplicates were written by retries.
    for p in range(4):
        offsets = sorted(m.offset() for m in messages if m.partition() == p)
        assert offsets == list(range(len(offsets)))


def test_offsets_for_times(rafka):
    produce(rafka.bootstrap, "ck-times", 1000, **{"compression.type": "zstd", "linger.ms": 20})
    consumer = ck.Consumer({"bootstrap.servers": rafka.bootstrap, "group.id": "t"})
    found = consumer.offsets_for_times([ck.TopicPartition("ck-times", 0, 1_700_000_000_500)], timeout=10)
    assert found[0].offset == 500
    found = consumer.offsets_for_times([ck.TopicPartition("ck-times", 0, 1_800_000_000_000)], timeout=10)
    assert found[0].offset == -1  # nothing that late: the end
    low, high = consumer.get_watermark_offsets(ck.TopicPartition("ck-times", 0), timeout=10)
    assert (low, high) == (0, 1000)
    consumer.close()


def test_admin_create_describe_alter_partitions_delete(rafka):
    admin = AdminClient({"bootstrap.servers": rafka.bootstrap})
    topic = NewTopic("ck-admin", num_partitions=2, replication_factor=1, config={"retention.ms": "3600000"})
    admin.create_topics([topic])["ck-admin"].result(30)
    # A second create fails with TOPIC_ALREADY_EXISTS.
    error = admin.create_topics([topic])["ck-admin"].exception(30)
    assert error is not None and error.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS

    resource = ConfigResource("topic", "ck-admin")
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ck.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["segment.bytes"].value == "1073741824"

    alter = ConfigResource("topic", "ck-admin", incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([alter])[alter].result(30)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].value == "604800000"

    bad = ConfigResource("topic", "ck-admin", incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    error = admin.incremental_alter_configs([bad])[bad].exception(30)
    assert error is not None and error.args[0].code() == ck.KafkaError.INVALID_CONFIG

    admin.create_partitions([NewPartitions("ck-admin", 5)])["ck-admin"].result(30)
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics["ck-admin"].partitions) == 5

    admin.delete_topics(["ck-admin"])["ck-admin"].result(30)
    wait_for(lambda: "ck-admin" not in admin.list_topics(timeout=10).topics, what="topic deletion")


def test_invalid_topic_config_is_refused_on_create(rafka):
    admin = AdminClient({"bootstrap.servers": rafka.bootstrap})
    error = admin.create_topics([NewTopic("ck-bad", 1, 1, config={"cleanup.policy": "sometimes"})])["ck-bad"].exception(30)
    assert error is not None and error.args[0].code() == ck.KafkaError.INVALID_CONFIG
    error = admin.create_topics([NewTopic("bad name!", 1, 1)])["bad name!"].exception(30)
    assert error is not None and error.args[0].code() == ck.KafkaError.TOPIC_EXCEPTION
