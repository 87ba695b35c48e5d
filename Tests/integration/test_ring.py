"""Partitions served through the ring by real processes (tools/cluster): 3 controllers and 5 data
nodes; confluent-kafka produces through one node and consumes everything back; a sixth node
joins (its partitions are copied to it before it serves them), a node is killed with kill -9, and
one is stopped with SIGTERM (it hands its partitions over before it exits). Prints the fraction
of partitions that moved and how long until every partition was served."""
import os
import re
import signal
import socket
import struct
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
import kafka
from kafka.protocol.consumer import FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record.memory_records import MemoryRecordsBuilder

from conftest import wait_for
from test_controllers import cluster  # noqa: F401  (the fixture)

PARTITIONS = 50
PER_PARTITION = 40


def node_addresses(c):
    return {p["id"]: p["listeners"]["kafka"] for p in c.info["processes"] if p["role"] == "node"}


def leaders(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(topic, timeout=10)
    t = metadata.topics[topic]
    if t.error is not None:
        return None
    return {p.id: (p.leader if p.error is None else -1) for p in t.partitions.values()}


def produce(bootstrap, topic, tag, partitions=range(PARTITIONS), count=PER_PARTITION, timeout=60):
    """Produces `count` records to every partition (acks=all); returns the failures."""
    failures = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": int(timeout * 1000), "enable.idempotence": True})

    def done(err, msg):
        if err is not None:
            failures.append((msg.partition(), err))

    for p in partitions:
        for i in range(count):
            producer.produce(topic, value=f"{tag}-{p}-{i}".encode(), partition=p, on_delivery=done)
    producer.flush(timeout + 10)
    return failures


def consume_all(bootstrap, topic, partitions=range(PARTITIONS)):
    """Every record of the given partitions, from the start, as {partition: [values]}."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ring-check", "enable.auto.commit": False,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values = {p: [] for p in partitions}
    at_end = set()
    deadline = time.time() + 60
    while len(at_end) < len(values) and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            continue
        values[msg.partition()].append(msg.value().decode())
    consumer.close()
    return values


def wait_until_served(bootstrap, topic, gone=(), timeout=60):
    """Seconds until Metadata names a live leader for every partition and a record reaches each."""
    started = time.time()
    wait_for(lambda: (lambda ls: ls and all(l >= 0 and l not in gone for l in ls.values()))(leaders(bootstrap, topic)),
             timeout=timeout, what="a leader for every partition")
    assert produce(bootstrap, topic, "probe", count=1, timeout=timeout) == []
    return time.time() - started


def epochs(address, topic):
    """The topic's id and {partition: (leader, leader epoch)}, from a Metadata v12 answer of the node at `address`."""
    answer = call(address, MetadataRequest[12](topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                                              allow_auto_topic_creation=False), MetadataResponse, 12)
    return answer.topics[0].topic_id, {p.partition_index: (p.leader_id, p.leader_epoch) for p in answer.topics[0].partitions}


def fetch_error(address, topic_id, partition, epoch):
    """The error code of a Fetch v16 of one partition from offset 0 naming `epoch` as its current leader epoch."""
    fetch_partition = FetchRequest.FetchTopic.FetchPartition(
        partition=partition, current_leader_epoch=epoch, fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
        partition_max_bytes=1 << 16)
    fetch = FetchRequest[16](max_wait_ms=0, min_bytes=1, max_bytes=1 << 16, isolation_level=0, session_id=0, session_epoch=-1,
                             topics=[FetchRequest.FetchTopic(topic_id=topic_id, partitions=[fetch_partition])],
                             forgotten_topics_data=[], rack_id="")
    return call(address, fetch, FetchResponse, 16).responses[0].partitions[0].error_code


def epoch_end(address, topic, partition, current, epoch):
    """OffsetForLeaderEpoch v4 of one partition: (error code, leader epoch, end offset) for `epoch`."""
    request = OffsetForLeaderEpochRequest[4](replica_id=-1, topics=[OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
        topic=topic, partitions=[OffsetForLeaderEpochRequest.OffsetForLeaderTopic.OffsetForLeaderPartition(
            partition=partition, current_leader_epoch=current, leader_epoch=epoch)])])
    answer = call(address, request, OffsetForLeaderEpochResponse, 4).topics[0].partitions[0]
    return answer.error_code, answer.leader_epoch, answer.end_offset


def assert_new_epochs_only_for(moved, before, after, event):
    """Per-partition leader epochs: the partitions `event` moved have a newer one, every other keeps its own."""
    for p in range(PARTITIONS):
        if p in moved:
            assert after[p][1] > before[p][1], f"{event}: partition {p} moved but kept leader epoch {before[p][1]}"
        else:
            assert after[p] == before[p], f"{event}: partition {p} did not move, but {before[p]} became {after[p]}"


def test_a_join_and_a_kill9_keep_every_partition_served(cluster):  # noqa: F811
    c = cluster(nodes=5)
    wait_for(lambda: (lambda d: d and len(d["nodes"]) == 5 and all(n["state"] == "active" for n in d["nodes"]))(c.describe()),
             what="five active data nodes")
    addresses = node_addresses(c)
    bootstrap = addresses[103]  # any one node will do
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # RF 1 until replication: a killed leader's partitions pass to the next node only if the topic
    # allows an unclean takeover (Kafka's default keeps them offline until the node returns).
    new = NewTopic("spread", num_partitions=PARTITIONS, replication_factor=1,
                   config={"unclean.leader.election.enable": "true"})
    admin.create_topics([new])["spread"].result(30)
    wait_until_served(bootstrap, "spread")
    before = leaders(bootstrap, "spread")
    assert set(before.values()) <= set(addresses) and len(set(before.values())) == 5, before
    topic_id, epochs_before = epochs(bootstrap, "spread")

    assert produce(bootstrap, "spread", "first") == []
    got = consume_all(addresses[101], "spread")
    for p in range(PARTITIONS):
        assert [v for v in got[p] if v.startswith("first-")] == [f"first-{p}-{i}" for i in range(PER_PARTITION)], p

    # A sixth node joins: it takes over only the partitions of the arcs it takes, with their data.
    # It registers as joining, copies what it will lead from the current leaders, and only then is
    # placed: the partitions it takes are unavailable only while it copies what came since.
    started = time.time()
    c.tool("add-node")
    wait_for(lambda: (lambda ls: ls and 106 in ls.values())(leaders(bootstrap, "spread")), what="node 106 leading partitions",
             timeout=60)
    placed = time.time() - started
    switch = wait_until_served(bootstrap, "spread")
    served = placed + switch
    after_join = leaders(bootstrap, "spread")
    moved = [p for p in range(PARTITIONS) if after_join[p] != before[p]]
    assert all(after_join[p] == 106 for p in moved), "a join moves partitions only to the new node"
    _, epochs_after_join = epochs(bootstrap, "spread")
    assert_new_epochs_only_for(moved, epochs_before, epochs_after_join, "the join")
    # A consumer still at the old epoch reads on where nothing moved; where its partition moved,
    # the new leader fences it (FENCED_LEADER_EPOCH: refresh metadata, then validate).
    still = next(p for p in range(PARTITIONS) if p not in moved)
    assert fetch_error(addresses[after_join[still]], topic_id, still, epochs_before[still][1]) == 0
    assert fetch_error(node_addresses(c)[106], topic_id, moved[0], epochs_before[moved[0]][1]) == 74
    print(f"\njoin of node 106: {len(moved)}/{PARTITIONS} partitions moved ({len(moved) / PARTITIONS:.2f}; "
          f"1/N = {1 / 6:.2f}); placed {placed:.2f} s after it started (after copying), every partition served "
          f"{switch:.2f} s after that ({served:.2f} s in all)")
    got = consume_all(bootstrap, "spread")
    for p in range(PARTITIONS):
        assert [v for v in got[p] if v.startswith("first-")] == [f"first-{p}-{i}" for i in range(PER_PARTITION)], \
            f"partition {p} (moved: {p in moved}) lost records in the handoff"

    # kill -9 of a data node: the controllers fence it after the session timeout and the next node
    # clockwise takes each of its partitions over.
    victim = 102
    lost = [p for p in range(PARTITIONS) if after_join[p] == victim]
    assert lost, f"node {victim} leads no partition to lose"
    started = time.time()
    c.tool("kill", "--node", str(victim))
    wait_until_served(addresses[101], "spread", gone=(victim,), timeout=60)
    served = time.time() - started
    after_kill = leaders(addresses[101], "spread")
    moved = [p for p in range(PARTITIONS) if after_kill[p] != after_join[p]]
    assert sorted(moved) == sorted(lost), "only the killed node's partitions move"
    _, epochs_after_kill = epochs(addresses[101], "spread")
    assert_new_epochs_only_for(moved, epochs_after_join, epochs_after_kill, "the kill -9")
    print(f"kill -9 of node {victim}: {len(moved)}/{PARTITIONS} partitions moved ({len(moved) / PARTITIONS:.2f}), "
          f"every partition served again {served:.2f} s after the kill (ring neighbours suspect it, the controllers confirm; the session timeout is 9 s)")
    assert produce(addresses[101], "spread", "second") == []
    # Where an epoch ends (KIP-320), from each log's leader epoch history. A partition that moved
    # by the join: its first records were copied with the epoch they were written in, and the
    # second ones began its new epoch. A partition the killed node held, passed on by unclean
    # takeover: the new leader's log has only the second records, all in its new epoch, so a
    # consumer at the end of the first ones (in the killed leader's epoch) learns that the
    # records it read are gone, though this log has grown as long again.
    # Each wait_until_served wrote a probe record to every partition: the joined one holds the
    # first probe and records (offsets 0-40, its old epoch), then the probes after the join and
    # the kill and the second records (41-82, its new epoch).
    joined = next(p for p in range(PARTITIONS) if after_join[p] == 106 and p not in lost)
    now_at = node_addresses(c)
    assert epoch_end(now_at[106], "spread", joined, epochs_after_kill[joined][1], epochs_before[joined][1]) == \
        (0, epochs_before[joined][1], PER_PARTITION + 1)
    assert epoch_end(now_at[106], "spread", joined, -1, epochs_after_kill[joined][1]) == \
        (0, epochs_after_kill[joined][1], 2 * PER_PARTITION + 3)
    for p in lost:
        assert epoch_end(now_at[after_kill[p]], "spread", p, epochs_after_kill[p][1], epochs_after_join[p][1]) == \
            (0, epochs_after_join[p][1], 0), p
    got = consume_all(addresses[104], "spread")
    for p in range(PARTITIONS):
        firsts = [v for v in got[p] if v.startswith("first-")]
        seconds = [v for v in got[p] if v.startswith("second-")]
        assert seconds == [f"second-{p}-{i}" for i in range(PER_PARTITION)], p
        # What only the killed node held is gone until replication; everything else is intact.
        assert firsts == ([] if p in lost else [f"first-{p}-{i}" for i in range(PER_PARTITION)]), p

    # SIGTERM: a controlled leave. The node asks to leave, the next nodes copy its partitions from
    # it, and it exits once they are all taken over; no record is lost.
    leaving = 104
    process = next(p for p in c.info["processes"] if p["id"] == leaving)
    handed = [p for p in range(PARTITIONS) if after_kill[p] == leaving]
    started = time.time()
    os.kill(process["pid"], signal.SIGTERM)
    wait_for(lambda: not alive(process["pid"]), timeout=40, what=f"node {leaving} to exit")
    exited = time.time() - started
    wait_until_served(addresses[101], "spread", gone=(victim, leaving))
    after_leave = leaders(addresses[101], "spread")
    moved = [p for p in range(PARTITIONS) if after_leave[p] != after_kill[p]]
    assert sorted(moved) == sorted(handed), "only the leaving node's partitions move"
    _, epochs_after_leave = epochs(addresses[101], "spread")
    assert_new_epochs_only_for(moved, epochs_after_kill, epochs_after_leave, "the leave")
    print(f"SIGTERM of node {leaving}: {len(moved)}/{PARTITIONS} partitions handed over, the node exited "
          f"{exited:.2f} s after the signal")
    got = consume_all(addresses[101], "spread")
    for p in handed:
        assert [v for v in got[p] if v.startswith("second-")] == [f"second-{p}-{i}" for i in range(PER_PARTITION)], p
        assert len([v for v in got[p] if v.startswith("first-")]) == (0 if p in lost else PER_PARTITION), p
    with open(process["log"]) as f:
        log = f.read()
    assert "handed every partition over" in log
    # Before it asked to leave, the nodes that take its partitions copied them while it served them.
    ahead = re.search(r"asked=(\d+) copied=(\d+) .*copied this node's partitions ahead of its leave", log)
    assert ahead and int(ahead.group(1)) == int(ahead.group(2)) == len(handed), ahead and ahead.group(0)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by tools/cluster's parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def call(address, request, response_class, version):
    """One request over a new connection, encoded and decoded by kafka-python's protocol classes."""
    host, port = address.rsplit(":", 1)
    request.with_header(correlation_id=1, client_id="leader-hints")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request.encode(version=version, header=True, framed=True))

        def read(n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                assert chunk, "the broker closed the connection"
                data += chunk
            return data

        size, = struct.unpack(">i", read(4))
        return response_class.decode(read(size), version=version, header=True)


def test_a_node_turning_a_partition_away_names_its_leader(cluster):  # noqa: F811
    """KIP-951: Produce v10 and Fetch v16 sent to a node that does not lead the partition are
    answered NOT_LEADER_OR_FOLLOWER with the leader, its epoch and its address, as Metadata gives
    them; the leader itself serves both versions."""
    c = cluster(controllers=1, nodes=2)
    nodes = node_addresses(c)
    admin = AdminClient({"bootstrap.servers": c.info["bootstrap"]})
    admin.create_topics([NewTopic("hints", 8, 1)])["hints"].result(30)
    wait_for(lambda: (lambda ls: ls and all(l >= 0 for l in ls.values()))(leaders(c.info["bootstrap"], "hints")),
             what="a leader for every partition")
    topic_id, placed = epochs(nodes[101], "hints")
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=b"hint", headers=[])
    builder.close()
    records = bytes(builder.buffer())
    for partition, (leader, epoch) in placed.items():
        other = 102 if leader == 101 else 101
        data = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=records)
        produce = ProduceRequest[10](transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
            ProduceRequest.TopicProduceData(name="hints", partition_data=[data])])
        fetch_partition = FetchRequest.FetchTopic.FetchPartition(
            partition=partition, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
            partition_max_bytes=1 << 20)
        fetch = FetchRequest[16](max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0, session_id=0,
                                 session_epoch=-1, topics=[FetchRequest.FetchTopic(topic_id=topic_id, partitions=[fetch_partition])],
                                 forgotten_topics_data=[], rack_id="")
        endpoint = [(leader, nodes[leader])]
        # Turned away, with the way to the leader.
        answer = call(nodes[other], produce, ProduceResponse, 10)
        refused = answer.responses[0].partition_responses[0]
        assert refused.error_code == 6, refused  # NOT_LEADER_OR_FOLLOWER
        assert (refused.current_leader.leader_id, refused.current_leader.leader_epoch) == (leader, epoch)
        assert [(e.node_id, f"{e.host}:{e.port}") for e in answer.node_endpoints] == endpoint
        answer = call(nodes[other], fetch, FetchResponse, 16)
        refused = answer.responses[0].partitions[0]
        assert refused.error_code == 6, refused
        assert (refused.current_leader.leader_id, refused.current_leader.leader_epoch) == (leader, epoch)
        assert [(e.node_id, f"{e.host}:{e.port}") for e in answer.node_endpoints] == endpoint
        # The leader takes the record (once it has opened the partition) and gives it back, with no hint.
        answer = wait_for(lambda: (lambda a: a.responses[0].partition_responses[0].error_code == 0 and a)(
            call(nodes[leader], produce, ProduceResponse, 10)), what=f"node {leader} taking a record of partition {partition}")
        taken = answer.responses[0].partition_responses[0]
        assert (taken.error_code, taken.base_offset, taken.current_leader, answer.node_endpoints) == (0, 0, None, [])
        answer = call(nodes[leader], fetch, FetchResponse, 16)
        served = answer.responses[0].partitions[0]
        assert (served.error_code, served.high_watermark, answer.node_endpoints) == (0, 1, [])
        # As produced, but for the partition leader epoch the leader stamps in it.
        assert served.records[16:] == records[16:] and struct.unpack(">i", served.records[12:16])[0] == epoch


def test_consumers_read_on_across_a_join_and_a_leave(cluster):  # noqa: F811
    """Real consumers (librdkafka's and kafka-python's) read every record while a data node joins
    and another leaves under load. Both check their position when a partition's leader epoch
    changes (KIP-320: OffsetForLeaderEpoch; on the ring every join and leave changes it), and
    both fetch from a node that is still taking a partition over (answered with no records and
    offsets unknown, which neither may take for the partition's end)."""
    c = cluster(controllers=1, nodes=3)
    bootstrap = c.info["bootstrap"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("across", 12, 1)])["across"].result(30)
    wait_for(lambda: (lambda ls: ls and all(l >= 0 for l in ls.values()))(leaders(bootstrap, "across")),
             what="a leader for every partition")
    stop = threading.Event()
    acked, failures = {}, []
    rd_counts, kp_counts, errors = {}, {}, []

    def produce():
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "enable.idempotence": True})

        def done(err, msg):
            if err is not None:
                failures.append(str(err))
            else:
                acked[msg.partition()] = acked.get(msg.partition(), 0) + 1

        i = 0
        while not stop.is_set():
            for p in range(12):
                producer.produce("across", value=f"r{i}".encode(), partition=p, on_delivery=done)
                i += 1
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(60)

    def read_rd():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "across", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        consumer.assign([TopicPartition("across", p, OFFSET_BEGINNING) for p in range(12)])
        quiet_since = time.time()
        while not stop.is_set() or time.time() - quiet_since < 5:
            msg = consumer.poll(0.2)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                continue
            if msg.error():
                errors.append(f"librdkafka: {msg.error()}")
                continue
            rd_counts[msg.partition()] = rd_counts.get(msg.partition(), 0) + 1
            quiet_since = time.time()
        consumer.close()

    def read_kp():
        consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, group_id=None)
        consumer.assign([kafka.TopicPartition("across", p) for p in range(12)])
        consumer.seek_to_beginning()
        quiet_since = time.time()
        while not stop.is_set() or time.time() - quiet_since < 5:
            for tp, records in consumer.poll(timeout_ms=200).items():
                kp_counts[tp.partition] = kp_counts.get(tp.partition, 0) + len(records)
                quiet_since = time.time()
        consumer.close()

    threads = [threading.Thread(target=f) for f in (produce, read_rd, read_kp)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        c.tool("add-node")
        time.sleep(2.5)
        os.kill(next(p["pid"] for p in c.info["processes"] if p["id"] == 102), signal.SIGTERM)
        time.sleep(2.5)
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    assert failures == [] and errors == [], (failures[:5], errors[:5])
    assert sum(acked.values()) > 0
    assert rd_counts == acked, ("librdkafka", rd_counts, acked)
    assert kp_counts == acked, ("kafka-python", kp_counts, acked)
    print(f"\nacross a join and a leave: {sum(acked.values())} records acknowledged, all read by both consumers")


def test_a_consumer_sees_records_lost_in_an_unclean_takeover_as_truncation(cluster):  # noqa: F811
    """KIP-320 across an unclean takeover. A consumer reads a topic and keeps its positions with
    the leader epoch of the last record read (as a committed offset carries it). A node is then
    killed; its partitions pass to the next nodes (the topic allows it), which hold none of its
    records, and new records arrive there at the same offsets. librdkafka's consumer, assigned
    the kept positions, asks OffsetForLeaderEpoch where their epoch ends: the new leader's epoch
    history says at offset 0 (its log has none of that epoch), so it finds the position
    truncated, resets it and reads the new records. Answered with the log end, as before the
    history was kept, it took the position for valid and never read them."""
    c = cluster(controllers=1, nodes=3)
    partitions = range(6)
    addresses = node_addresses(c)
    admin = AdminClient({"bootstrap.servers": c.info["bootstrap"]})
    admin.create_topics([NewTopic("unclean", 6, 1, config={"unclean.leader.election.enable": "true"})])["unclean"].result(30)
    wait_for(lambda: (lambda ls: ls and all(l >= 0 for l in ls.values()))(leaders(c.info["bootstrap"], "unclean")),
             what="a leader for every partition")
    before = leaders(c.info["bootstrap"], "unclean")
    victim = before[0]
    lost = [p for p in partitions if before[p] == victim]
    survivor = next(address for node, address in addresses.items() if node != victim)
    assert produce(survivor, "unclean", "first", partitions=partitions, count=10) == []

    def read(assignment, done, what):
        consumer = Consumer({"bootstrap.servers": survivor, "group.id": "unclean", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        consumer.assign(assignment)
        got, positions, errors = {p: [] for p in partitions}, {}, []
        deadline = time.time() + 30
        try:
            while not done(got):
                assert time.time() < deadline, f"{what}: read {got}, errors {errors}"
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    errors.append(str(msg.error()))
                    continue
                got[msg.partition()].append(msg.value().decode())
                positions[msg.partition()] = (msg.offset() + 1, msg.leader_epoch())
        finally:
            consumer.close()
        return got, positions

    got, positions = read([TopicPartition("unclean", p, OFFSET_BEGINNING) for p in partitions],
                             lambda got: all(len(got[p]) == 10 for p in partitions), "the first records")
    assert all(positions[p][1] is not None and positions[p][1] >= 0 for p in partitions), positions
    c.tool("kill", "--node", str(victim))
    wait_for(lambda: (lambda ls: ls and all(l >= 0 and l != victim for l in ls.values()))(leaders(survivor, "unclean")),
             timeout=60, what="the killed node's partitions taken over")
    assert produce(survivor, "unclean", "second", partitions=partitions, count=10) == []
    # The lost partitions' logs hold the second records at offsets 0-9, and a kept position of 10.
    kept = [TopicPartition("unclean", p, positions[p][0], leader_epoch=positions[p][1]) for p in partitions]
    read(kept, lambda got: all(got[p] == [f"second-{p}-{i}" for i in range(10)] for p in partitions),
                               "the second records")
    print(f"\nunclean takeover of {len(lost)} of 6 partitions: librdkafka found their kept positions truncated "
          f"and read every new record")
