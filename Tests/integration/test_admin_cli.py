"""rafka-admin as scripts and people use it: tables, --json, one-line failures."""


def test_topic_lifecycle_with_tables_and_json(rafka):
    code, out, _ = rafka.admin("topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=86400000")
    assert "Created topic orders (3 partitions" in out
    code, out, _ = rafka.admin("topics", "list")
    assert out.splitlines()[0].split() == ["TOPIC", "PARTITIONS", "REPLICATION", "ID"]
    assert any(line.split()[:3] == ["orders", "3", "1"] for line in out.splitlines()[1:])
    topics = rafka.admin_json("topics", "list")
    assert [t["name"] for t in topics] == ["orders"] and topics[0]["partitions"] == 3

    described = rafka.admin_json("topics", "describe", "orders")[0]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 1 and p["leaderEpoch"] == 0 and p["isr"] == [1] for p in described["partitions"])
    code, out, _ = rafka.admin("topics", "describe", "orders")
    assert out.splitlines()[1].split() == ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"]
    assert out.splitlines()[2].split() == ["0", "1", "0", "1", "1"]
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "86400000" and configs["retention.ms"]["source"] == "topic"

    rafka.admin("topics", "alter-config", "orders", "--set", "retention.bytes=1000000", "--delete", "retention.ms")
    configs = {c["name"]: c for c in rafka.admin_json("topics", "describe", "orders")[0]["configs"]}
    assert configs["retention.bytes"]["value"] == "1000000"
    assert configs["retention.ms"]["source"] == "default"

    rafka.admin("topics", "add-partitions", "orders", "--partitions", "6")
    assert len(rafka.admin_json("topics", "describe", "orders")[0]["partitions"]) == 6

    code, out, _ = rafka.admin("topics", "delete", "orders")
    assert "Deleted topic orders" in out
    assert rafka.admin_json("topics", "list") == []


def test_failures_exit_non_zero_with_one_line(rafka):
    rafka.admin("topics", "create", "dup")
    for args, expected in [
        (("topics", "create", "dup"), "TOPIC_ALREADY_EXISTS"),
        (("topics", "describe", "missing"), "UNKNOWN_TOPIC_OR_PARTITION"),
        (("topics", "delete", "missing"), "UNKNOWN_TOPIC_OR_PARTITION"),
        (("topics", "alter-config", "dup", "--set", "retention.ms=never"), "INVALID_CONFIG"),
        (("topics", "add-partitions", "dup", "--partitions", "1"), "INVALID_PARTITIONS"),
        (("topics", "create", "r3", "--replication-factor", "3"), "INVALID_REPLICATION_FACTOR"),
    ]:
        code, out, err = rafka.admin(*args, check=False)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, err)


def test_unreachable_broker_is_one_line(tmp_path):
    import subprocess
    from conftest import ADMIN_BIN, free_port
    result = subprocess.run([ADMIN_BIN, "--bootstrap", f"127.0.0.1:{free_port()}", "topics", "list"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot connect" in result.stderr


def test_cluster_describe(rafka):
    """Standalone is a controller quorum of one voter and one broker."""
    cluster = rafka.admin_json("cluster", "describe")
    assert cluster["leaderId"] == 1 and cluster["term"] >= 1
    assert [v["id"] for v in cluster["voters"]] == [1]
    assert cluster["voters"][0]["matchIndex"] >= cluster["commitIndex"] >= 1
    assert cluster["voters"][0]["lag"] == 0
    assert cluster["brokers"] == [{"id": 1, "host": "127.0.0.1", "port": rafka.port}]
    code, out, _ = rafka.admin("cluster", "describe")
    assert "Controller quorum: leader 1" in out
