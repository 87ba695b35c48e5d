"""kcat (Debian's, librdkafka 2.0) producing and consuming with every codec. librdkafka up to
2.11 sends gzip, snappy and lz4 only to a broker that serves Produce v0, which Rafka (like
Kafka 4) does not: those batches of kcat's arrive uncompressed. The codecs librdkafka 2.16 sends
are checked in test_confluent.py, and a snappy topic's batches, which the broker writes, here."""
import subprocess

import pytest

from conftest import stored_codecs


def kcat(*args, input=None):
    result = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_and_consume_every_codec(rafka, codec):
    topic = f"kcat-{codec}"
    lines = "".join(f"key{i % 10}:{codec}-value-{i}-" + "x" * (i % 300) + "\n" for i in range(5000))
    kcat("-b", rafka.bootstrap, "-P", "-t", topic, "-z", codec, "-K:", input=lines.encode())
    out = kcat("-b", rafka.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o|%k|%s\n")
    rows = out.splitlines()
    assert len(rows) == 5000
    for i, row in enumerate(rows):
        offset, key, value = row.split("|", 2)
        assert int(offset) == i
        assert key == f"key{i % 10}"
        assert value == f"{codec}-value-{i}-" + "x" * (i % 300)


def test_metadata_lists_broker_and_topics(rafka):
    kcat("-b", rafka.bootstrap, "-P", "-t", "meta-topic", input=b"one\n")
    out = kcat("-b", rafka.bootstrap, "-L")
    assert f"broker 1 at {rafka.bootstrap}" in out
    assert 'topic "meta-topic" with 1 partitions' in out


def test_consume_from_an_offset_and_the_end(rafka):
    kcat("-b", rafka.bootstrap, "-P", "-t", "offsets", input="".join(f"m{i}\n" for i in range(100)).encode())
    out = kcat("-b", rafka.bootstrap, "-C", "-t", "offsets", "-o", "90", "-e", "-q")
    assert out.split() == [f"m{i}" for i in range(90, 100)]
    out = kcat("-b", rafka.bootstrap, "-C", "-t", "offsets", "-o", "-3", "-e", "-q")
    assert out.split() == ["m97", "m98", "m99"]


def test_a_snappy_topic_is_read_by_librdkafka_and_kafka_python(rafka):
    """A topic with compression.type=snappy: the broker recompresses what kcat sends
    uncompressed into the Java client's framed snappy, which kcat (librdkafka) and kafka-python
    read back."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaConsumer, TopicPartition

    topic = "kcat-snappy-topic"
    new = NewTopic(topic, num_partitions=1, replication_factor=1, config={"compression.type": "snappy"})
    admin = AdminClient({"bootstrap.servers": rafka.bootstrap})
    admin.create_topics([new])[topic].result(30)
    values = [f"value-{i}-" + "y" * (i % 500) for i in range(3000)]
    kcat("-b", rafka.bootstrap, "-P", "-t", topic, "-z", "none", input="".join(v + "\n" for v in values).encode())
    assert stored_codecs(rafka, topic) == {2}, "the stored batches are snappy"
    out = kcat("-b", rafka.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", "check.crcs=true", "-f", "%s\n")
    assert out.splitlines() == values
    consumer = KafkaConsumer(bootstrap_servers=rafka.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    assert [m.value.decode() for m in consumer] == values
    consumer.close()
