"""Durability across restarts: SIGTERM (clean) and kill -9 (crash)."""
import os
import signal
import threading
import time

import confluent_kafka as ck

from conftest import wait_for


def read_all(bootstrap, topic, partitions=1, timeout=30):
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "restart", "enable.auto.commit": False})
    low_high = [consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10) for p in range(partitions)]
    expected = sum(high - low for low, high in low_high)
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1):
            assert msg.error() is None, msg.error()
            out.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
    consumer.close()
    assert len(out) == expected
    return sorted(out)


def test_sigterm_restart_keeps_identical_data(rafka):
    rafka.admin("topics", "create", "durable", "--partitions", "3")
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "enable.idempotence": True, "compression.type": "lz4"})
    for i in range(30_000):
        producer.produce("durable", key=b"%d" % (i % 3), value=os.urandom(64), partition=i % 3)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    admin_topic = rafka.admin_json("topics", "describe", "durable")[0]
    before = read_all(rafka.bootstrap, "durable", partitions=3)
    assert rafka.stop(signal.SIGTERM) == 0, "a clean shutdown exits 0"
    assert "shut down cleanly" in rafka.logs()
    rafka.start()
    assert rafka.admin_json("topics", "describe", "durable")[0]["id"] == admin_topic["id"]
    assert read_all(rafka.bootstrap, "durable", partitions=3) == before
    # The log continues where it stopped.
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap})
    delivered = []
    producer.produce("durable", value=b"after", partition=0, on_delivery=lambda e, m: delivered.append(m.offset()))
    producer.flush(30)
    assert delivered == [10_000]


def test_kill9_loses_no_acknowledged_record(rafka):
    """Producers with acks=all write while the broker is killed with SIGKILL; after a restart
    every record that was acknowledged is read back, in order, once."""
    rafka.admin("topics", "create", "crash", "--partitions", "2", "--config", "segment.bytes=1048576")
    acked = {0: [], 1: []}
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        producer = ck.Producer({
            "bootstrap.servers": rafka.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "message.timeout.ms": 5000})
        i = 0

        def on_delivery(err, msg):
            if err is None:
                with lock:
                    acked[msg.partition()].append((msg.offset(), msg.value()))

        while not stop.is_set():
            try:
                producer.produce("crash", value=b"rec-%08d-" % i + b"y" * 200, partition=i % 2, on_delivery=on_delivery)
                i += 1
            except BufferError:
                producer.poll(0.01)
            producer.poll(0)
        producer.flush(10)

    thread = threading.Thread(target=produce)
    thread.start()
    wait_for(lambda: len(acked[0]) + len(acked[1]) > 20_000, timeout=60, what="records acknowledged before the kill")
    rafka.kill9()
    stop.set()
    thread.join(30)
    with lock:
        acknowledged = {p: list(v) for p, v in acked.items()}
    rafka.start()
    stored = read_all(rafka.bootstrap, "crash", partitions=2)
    by_partition = {0: {}, 1: {}}
    for partition, offset, _, value, _ in stored:
        by_partition[partition][offset] = value
    for partition, records in acknowledged.items():
        for offset, value in records:
            assert by_partition[partition].get(offset) == value, f"acknowledged record {partition}@{offset} lost or changed"
        # Offsets stay dense: recovery never leaves holes or duplicates.
        assert sorted(by_partition[partition]) == list(range(len(by_partition[partition])))


def test_corrupt_closed_segment_keeps_its_partition_offline_and_names_the_file(rafka):
    """A closed segment damaged past the recovery point is reported by file name; that partition
    answers KAFKA_STORAGE_ERROR while every other partition and topic is served."""
    rafka.admin("topics", "create", "damaged", "--partitions", "2", "--config", "segment.bytes=20000")
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "linger.ms": 0, "batch.num.messages": 10})
    for i in range(400):
        producer.produce("damaged", value=b"%05d" % i + b"z" * 200, partition=i % 2)
        producer.poll(0)
    assert producer.flush(30) == 0
    rafka.kill9()
    partition_dir = os.path.join(rafka.data_dir, "logs", "damaged-0")
    # As after a crash before any checkpoint: everything must be validated on start.
    if os.path.exists(os.path.join(partition_dir, "recovery-point")):
        os.remove(os.path.join(partition_dir, "recovery-point"))
    first = os.path.join(partition_dir, "00000000000000000000.log")
    with open(first, "r+b") as f:
        f.seek(300)
        byte = f.read(1)
        f.seek(300)
        f.write(bytes([byte[0] ^ 0xFF]))
    size_before = os.path.getsize(first)
    rafka.start()
    wait_for(lambda: "00000000000000000000.log" in rafka.logs() and "offline" in rafka.logs(), what="the offline report")
    assert os.path.getsize(first) == size_before, "the damaged segment is kept as it was"
    outcome = {}
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "message.timeout.ms": 3000})
    for partition in (0, 1):
        producer.produce("damaged", value=b"to-%d" % partition, partition=partition,
                         on_delivery=lambda e, m, p=partition: outcome.__setitem__(p, e))
    producer.flush(30)
    assert outcome[1] is None, outcome  # partition 1 serves
    assert outcome[0] is not None, outcome  # partition 0 is offline (no leader): the write fails
    consumer = ck.Consumer({"bootstrap.servers": rafka.bootstrap, "group.id": "damaged"})
    assert consumer.get_watermark_offsets(ck.TopicPartition("damaged", 1), timeout=10) == (0, 201)
    consumer.close()


def test_retention_deletes_old_segments_and_a_restart_keeps_the_start(make_rafka):
    """Retention by size takes the oldest segments: their files go (renamed, then unlinked off
    the partition's loop), the earliest offset moves past them, a consumer reading from the
    beginning starts there, and a kill -9 and restart neither bring them back nor leave files."""
    broker = make_rafka(config_text="retention-check-interval-ms: 200\n")
    broker.admin("topics", "create", "aging", "--partitions", "1",
                 "--config", "segment.bytes=65536", "--config", "retention.bytes=262144")
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(2000):
        producer.produce("aging", value=b"rec-%06d-" % i + os.urandom(1000), partition=0)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    directory = os.path.join(broker.data_dir, "logs", "aging-0")

    def watermarks():
        consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "aging"})
        try:
            return consumer.get_watermark_offsets(ck.TopicPartition("aging", 0), timeout=10)
        finally:
            consumer.close()

    def settled():
        names = os.listdir(directory)
        segments = [n for n in names if n.endswith(".log")]
        return not any(n.endswith(".deleted") for n in names) and len(segments) <= 262144 // 65536 + 2

    low, high = wait_for(lambda: (lambda w: w if w[0] > 0 else None)(watermarks()), timeout=30,
                         what="retention moving the earliest offset")
    wait_for(settled, timeout=30, what=f"deleted segments unlinked: {sorted(os.listdir(directory))}")
    assert high == 2000
    records = read_all(broker.bootstrap, "aging")
    assert records[0][1] == low and len(records) == high - low
    assert records[-1][3].startswith(b"rec-001999-")

    broker.kill9()
    broker.start()
    low_after, high_after = watermarks()
    assert low_after >= low and high_after == 2000
    assert settled(), sorted(os.listdir(directory))


def test_offsets_by_time_after_a_restart(rafka):
    # After a restart the closed segments' offset indexes are read on first use (off the event
    # loops, as is the search itself), or rebuilt from their segments where the files are gone;
    # offsets by time and the records read are as before.
    rafka.admin("topics", "create", "times", "--partitions", "1", "--config", "segment.bytes=16384")
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "batch.size": 2000, "compression.type": "lz4"})
    for i in range(3000):
        producer.produce("times", value=b"time-%d" % i + os.urandom(32), timestamp=1_700_000_000_000 + 10 * i)
    assert producer.flush(60) == 0
    assert len([n for n in os.listdir(os.path.join(rafka.data_dir, "logs", "times-0")) if n.endswith(".log")]) > 3
    before = read_all(rafka.bootstrap, "times")
    assert rafka.stop(signal.SIGTERM) == 0
    folder = os.path.join(rafka.data_dir, "logs", "times-0")
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".index"))[::2]:
        os.remove(os.path.join(folder, name))
    rafka.start()
    consumer = ck.Consumer({"bootstrap.servers": rafka.bootstrap, "group.id": "times"})
    for i in (1, 700, 1500, 2999):
        found = consumer.offsets_for_times([ck.TopicPartition("times", 0, 1_700_000_000_000 + 10 * i - 5)], timeout=10)
        assert found[0].offset == i
    late = consumer.offsets_for_times([ck.TopicPartition("times", 0, 1_800_000_000_000)], timeout=10)
    assert late[0].offset == -1
    consumer.close()
    assert read_all(rafka.bootstrap, "times") == before
