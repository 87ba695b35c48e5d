"""Partitions served through the ring by real processes (tools/cluster): 3 controllers and 5 data
nodes; confluent-kafka produces through one node and consumes everything back; a sixth node
joins (its partitions are copied to it before it serves them), a node is killed with kill -9, and
one is stopped with SIGTERM (it hands its partitions over before it exits). Prints the fraction
of partitions that moved and how long until every partition was served."""
import os
import re
import signal
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

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
    started = time.time()
    c.tool("kill", "--node", str(victim))
    wait_until_served(addresses[101], "spread", gone=(victim,), timeout=60)
    served = time.time() - started
    after_kill = leaders(addresses[101], "spread")
    moved = [p for p in range(PARTITIONS) if after_kill[p] != after_join[p]]
    assert sorted(moved) == sorted(lost), "only the killed node's partitions move"
    print(f"kill -9 of node {victim}: {len(moved)}/{PARTITIONS} partitions moved ({len(moved) / PARTITIONS:.2f}), "
          f"every partition served again {served:.2f} s after the kill (ring neighbours suspect it, the controllers confirm; the session timeout is 9 s)")
    assert produce(addresses[101], "spread", "second") == []
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
