"""rafka-bench against a real rafka process, as a user runs it: produce, consume and e2e
report what the broker holds (counted again with kcat), JSON results, broker CPU and memory,
and refusals for settings that cannot run."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import ADMIN_BIN, BENCH_BIN, wait_for
from test_controllers import cluster  # noqa: F401  (the fixture)


def bench(broker, *args, check=True):
    result = subprocess.run(
        [BENCH_BIN, *args, "--bootstrap", broker.bootstrap, "--json", "--broker-pid", str(broker.proc.pid)],
        capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    return result


def kcat_count(broker, topic):
    out = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-e", "-q", "-f", "%o\n"],
                         capture_output=True, text=True, timeout=60).stdout
    return len(out.split())


def test_produce_then_consume_everything(rafka):
    # Enough records that the broker's CPU time (read from /proc in 10 ms ticks) is never 0.
    produced = bench(rafka, "produce", "--topic", "b1", "--partitions", "4", "--records", "200000", "--warmup", "0",
                     "--record-bytes", "200", "--compression", "zstd")
    assert produced["errors"] == {} and produced["records"] >= 200000, produced
    assert produced["produceLatency"]["count"] == produced["records"]
    assert produced.get("sendLag") is None  # no schedule to be late for
    assert produced["brokerCPUSeconds"] > 0 and produced["brokerResidentBytes"] > 0
    assert kcat_count(rafka, "b1") == produced["records"]
    consumed = bench(rafka, "consume", "--topic", "b1", "--from", "earliest", "--records", str(produced["records"]),
                     "--warmup", "0", "--consumers", "2")
    assert consumed["records"] == produced["records"], consumed
    assert consumed["fetchLatency"]["count"] > 0


def test_open_loop_end_to_end_matches_every_record(rafka):
    result = bench(rafka, "e2e", "--topic", "b2", "--rate", "20000", "--duration", "2", "--warmup", "1",
                   "--record-bytes", "512", "--compression", "lz4", "--acks", "all")
    assert result["errors"] == {} and result["unmatchedBatches"] == 0, result
    # 2 s at 20,000 records/s, one batch either way.
    assert abs(result["records"] - 40_000) <= 200, result
    assert result["endToEndLatency"]["count"] == result["records"]
    assert 0 < result["endToEndLatency"]["p50"] <= result["endToEndLatency"]["p99"] <= result["endToEndLatency"]["max"]
    # How late each measured batch left, a part of every latency above.
    assert result["sendLag"]["count"] * result["recordsPerBatch"] == result["records"], result
    assert result["sendLag"]["p50"] <= result["endToEndLatency"]["p50"]


def keyed_records(broker, topic, partitions):
    """Every record of `topic` read back by librdkafka: how many, how many on the wrong partition
    for kafka-python's murmur2 partitioner (Kafka's default), and the records per key."""
    import collections
    import confluent_kafka as ck
    from kafka.partitioner.default import murmur2
    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "keys", "enable.auto.commit": False})
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    count, misplaced, keys, idle = 0, 0, collections.Counter(), 0
    try:
        while idle < 6:
            message = consumer.poll(0.5)
            if message is None:
                idle += 1
                continue
            assert message.error() is None, message.error()
            idle = 0
            count += 1
            keys[message.key()] += 1
            misplaced += (murmur2(message.key()) & 0x7FFFFFFF) % partitions != message.partition()
    finally:
        consumer.close()
    return count, misplaced, keys


def test_keyed_records_go_to_their_keys_partitions(rafka):
    # Open loop, keys drawn by Zipf's law over 100 keys: key 0 is 1/H(100) = 19% of the records.
    result = bench(rafka, "e2e", "--topic", "b-keys", "--partitions", "6", "--rate", "20000", "--duration", "2",
                   "--warmup", "0", "--key-bytes", "8", "--key-space", "100", "--key-skew", "1", "--record-bytes", "64",
                   "--linger-ms", "5")
    assert result["errors"] == {} and result["unmatchedBatches"] == 0, result
    assert abs(result["records"] - 40_000) <= 400, result
    assert result["endToEndLatency"]["count"] == result["records"]
    count, misplaced, keys = keyed_records(rafka, "b-keys", 6)
    assert count == result["records"] and misplaced == 0
    assert len(keys) >= 90, len(keys)
    assert 0.15 <= keys.most_common(1)[0][1] / count <= 0.24, keys.most_common(3)
    # The highest rate: uniform keys, each batch on its keys' partition too.
    produced = bench(rafka, "produce", "--topic", "b-keys-fast", "--partitions", "5", "--records", "20000",
                     "--warmup", "0", "--key-bytes", "16", "--record-bytes", "100")
    assert produced["errors"] == {}, produced
    count, misplaced, keys = keyed_records(rafka, "b-keys-fast", 5)
    assert count >= 20_000 and misplaced == 0 and len(keys) >= 1000


@pytest.mark.parametrize("keys", [["--key-bytes", "8", "--key-space", "100", "--key-skew", "1"], []],
                         ids=["keyed", "round-robin"])
def test_a_stalled_broker_shows_as_latency_with_every_batch_matched(rafka, keys):
    # The broker stops for half a second mid-run. The open-loop producer falls behind by many
    # batches of every partition; catching up, it sends one batch per partition in each
    # request (as Kafka producers do), so every acknowledgement names its own batch and the
    # stall shows in the end-to-end latency of every record it held up.
    def stall():
        time.sleep(1.5)
        os.kill(rafka.proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(rafka.proc.pid, signal.SIGCONT)

    stopper = threading.Thread(target=stall)
    stopper.start()
    try:
        result = bench(rafka, "e2e", "--topic", "b-stall", "--partitions", "6", "--rate", "20000", "--duration", "3",
                       "--warmup", "0", *keys, "--record-bytes", "64", "--linger-ms", "5")
    finally:
        stopper.join()
    assert result["errors"] == {} and result["unmatchedBatches"] == 0, result
    latency = result["endToEndLatency"]
    assert latency["count"] == result["records"], result
    assert latency["max"] >= 450, latency
    assert result["sendLag"]["max"] >= 450, result["sendLag"]


def test_uncompressed_batches_are_read_back_byte_for_byte(rafka):
    result = bench(rafka, "produce", "--topic", "b4", "--compression", "none", "--records", "3000", "--warmup", "0",
                   "--record-bytes", "100", "--payload", "zeros")
    assert result["errors"] == {} and result["records"] >= 3000, result
    out = subprocess.run(["kcat", "-C", "-b", rafka.bootstrap, "-t", "b4", "-e", "-q", "-c", "1", "-f", "%S %s\\n",
                          "-X", "check.crcs=true"], capture_output=True, timeout=60)
    assert out.stdout == b"100 " + bytes(100) + b"\n", out


def test_acks_zero_and_refusals(rafka):
    result = bench(rafka, "produce", "--topic", "b3", "--acks", "0", "--records", "5000", "--warmup", "0")
    assert result["records"] >= 5000 and result["errors"] == {}
    missing = bench(rafka, "consume", "--topic", "no-such-topic", "--records", "1", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    brotli = bench(rafka, "produce", "--topic", "b3", "--compression", "brotli", "--records", "1", check=False)
    assert brotli.returncode != 0 and "must be none" in brotli.stderr
    e2e_without_acks = bench(rafka, "e2e", "--acks", "0", "--duration", "1", check=False)
    assert e2e_without_acks.returncode != 0 and "acknowledgements" in e2e_without_acks.stderr


def test_a_cluster_of_two_data_nodes(cluster):  # noqa: F811
    """rafka-bench finds each partition's leader across data nodes, waits until a new topic's
    partitions are served, and cache describe answers for every node."""
    c = cluster(controllers=1, nodes=2)
    addresses = [p["listeners"]["kafka"] for p in c.info["processes"] if p["role"] == "node"]
    out = subprocess.run([BENCH_BIN, "e2e", "--bootstrap", addresses[0], "--topic", "spread", "--partitions", "8",
                          "--rate", "20000", "--duration", "2", "--warmup", "1", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["errors"] == {} and result["unmatchedBatches"] == 0 and result["partitions"] == 8, result
    caches = json.loads(subprocess.run([ADMIN_BIN, "--bootstrap", addresses[1], "--json", "cache", "describe"],
                                       capture_output=True, text=True, check=True, timeout=60).stdout)
    assert sorted(report["node"] for report in caches) == sorted(
        p["id"] for p in c.info["processes"] if p["role"] == "node")
    assert sum(report["batches"] for report in caches) > 0


def test_the_highest_rate_over_a_thousand_partitions(rafka):
    """A request with a megabyte batch for each of 1,000 partitions would be half a gigabyte, which a
    broker refuses: rafka-bench sends at most 16 MiB at once and goes on with the next partitions."""
    result = bench(rafka, "produce", "--topic", "wide", "--partitions", "1000", "--records", "20000", "--warmup", "1",
                   "--record-bytes", "200", "--compression", "none", "--in-flight", "2")
    assert result["errors"] == {} and result["records"] >= 20000, result


def test_fetch_sessions_list_only_moved_partitions(rafka):
    """With --fetch-sessions the consumer opens one incremental fetch session (KIP-227) and keeps
    it: every fetch after the first continues it, and every record still arrives."""
    common = ["--partitions", "300", "--rate", "20000", "--duration", "2", "--warmup", "0", "--linger-ms", "2",
              "--record-bytes", "100"]
    result = bench(rafka, "e2e", "--topic", "b-sessions", "--fetch-sessions", *common)
    assert result["errors"] == {} and result["unmatchedBatches"] == 0, result
    assert result["endToEndLatency"]["count"] == result["records"] > 0
    assert result["fetchSessionResets"] == 0
    assert result["incrementalFetchRequests"] == result["fetchRequests"] - 1 > 0, result
    full = bench(rafka, "e2e", "--topic", "b-full", *common)
    assert full["errors"] == {} and full["unmatchedBatches"] == 0, full
    assert full["incrementalFetchRequests"] == 0 and full["fetchRequests"] > 0


def test_producers_and_consumers_follow_partitions_that_move(cluster):  # noqa: F811
    """The ring changes under load: a node joins, one leaves with SIGTERM, one is killed with -9
    and started again. rafka-bench, as Kafka clients do, asks where a refused partition went,
    sends its batches there again and reads on from where it was: every acknowledged record
    arrives, the moves show as retries and as latency, not as errors, and the partitions that
    do not move go on meanwhile."""
    c = cluster(controllers=1, nodes=3)
    wait_for(lambda: (lambda d: d and len(d["nodes"]) == 3 and all(n["state"] == "active" for n in d["nodes"]))(c.describe()),
             what="three active data nodes")
    c.admin("topics", "create", "moving", "--partitions", "24")
    bench_run = subprocess.Popen(
        [BENCH_BIN, "e2e", "--bootstrap", c.info["bootstrap"], "--topic", "moving", "--rate", "20000", "--duration", "9",
         "--warmup", "1", "--record-bytes", "200", "--linger-ms", "5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)
        c.tool("add-node")
        time.sleep(2.5)
        os.kill(next(p["pid"] for p in c.info["processes"] if p["id"] == 102), signal.SIGTERM)
        time.sleep(2.5)
        c.tool("kill", "--node", "103")
        time.sleep(0.5)
        c.tool("start", "--node", "103")
        out, err = bench_run.communicate(timeout=120)
    finally:
        bench_run.kill()
    assert bench_run.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == {} and result["unmatchedBatches"] == 0, result
    assert result["endToEndLatency"]["count"] == result["records"] > 0, result
    # While records were being acknowledged, records arrived every second: what did not move went on.
    producing = [second for second in result["timeline"] if second["records"] > 0]
    assert len(producing) >= 10 and all(second["consumed"] > 0 for second in producing), result["timeline"]
    retries = result["retries"]
    # The join and the leave: old leaders turn away the fetches of what they handed over (a batch
    # is turned away only if it reaches the old leader after the move; one that reaches the new
    # leader before its takeover ended waits for it there).
    assert retries.get("fetch NOT_LEADER_OR_FOLLOWER", 0) > 0, retries
    # The kill: the consumer's waiting fetch, and the producer's next batch, find the connection closed.
    assert retries.get("fetch connection to its leader closed", 0) > 0, retries
    assert retries.get("connection to its leader closed", 0) > 0, retries
    print(f"\nmoves under load: retries {retries}; batches written twice {result['unacknowledgedBatches']}; "
          f"each second: acknowledged, received, worst e2e latency (ms): "
          f"{[(s['records'], s['consumed'], round(s['maxLatencyMs'])) for s in result['timeline']]}")
