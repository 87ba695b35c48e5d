"""The controller quorum as real processes (tools/cluster): leader failure, a paused leader,
full restarts, and voter changes under load."""
import json
import os
import re
import subprocess
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ADMIN_BIN, RAFKA_BIN, ROOT, wait_for

CLUSTER = os.path.join(ROOT, "tools", "cluster")


class Cluster:
    def __init__(self, directory, controllers=3, nodes=1, config=None):
        self.dir = str(directory)
        self.args = ["--controllers", str(controllers), "--nodes", str(nodes)]
        if config:
            path = os.path.join(self.dir, "settings.yaml")
            os.makedirs(self.dir, exist_ok=True)
            with open(path, "w") as f:
                f.write(config)
            self.args += ["--config", path]

    def tool(self, *args, check=True):
        env = dict(os.environ, RAFKA_BIN=RAFKA_BIN, RAFKA_ADMIN_BIN=ADMIN_BIN)
        result = subprocess.run([CLUSTER, *args, "--dir", self.dir], capture_output=True, text=True, env=env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"tools/cluster {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()

    def up(self):
        return self.tool("up", *self.args)

    @property
    def info(self):
        with open(os.path.join(self.dir, "cluster.json")) as f:
            return json.load(f)

    def controller(self, node_id):
        return next(p for p in self.info["processes"] if p["id"] == node_id)

    def describe(self, address=None):
        result = subprocess.run(
            [ADMIN_BIN, "--bootstrap", address or self.info["bootstrap"], "--json", "cluster", "describe"],
            capture_output=True, text=True, timeout=30)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def admin(self, *args):
        result = subprocess.run([ADMIN_BIN, "--bootstrap", self.info["bootstrap"], *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def leader(self):
        return wait_for(lambda: (self.describe() or {}).get("leaderId", -1) >= 0 and self.describe()["leaderId"], what="a leader")

    def leadership_log(self):
        """(term, leader) pairs every controller logged."""
        pairs = set()
        for process in self.info["processes"]:
            if process["role"] != "controller" or not os.path.exists(process["log"]):
                continue
            with open(process["log"]) as f:
                for line in f:
                    match = re.search(r"leader=(\d+) term=(\d+) .*leader changed", line)
                    if match:
                        pairs.add((int(match.group(2)), int(match.group(1))))
        return pairs


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(**kwargs):
        c = Cluster(tmp_path / f"cluster{len(made)}", **kwargs)
        c.up()
        made.append(c)
        return c

    yield make
    for c in made:
        c.tool("down", check=False)


def one_leader_per_term(c):
    by_term = {}
    for term, leader in c.leadership_log():
        by_term.setdefault(term, set()).add(leader)
    assert all(len(leaders) == 1 for leaders in by_term.values()), f"two leaders in one term: {by_term}"


def test_kill9_of_the_leader_elects_a_new_one_within_2_seconds(cluster):
    c = cluster()
    c.admin("topics", "create", "before")
    old = c.leader()
    c.tool("kill", "--node", str(old))
    started = time.monotonic()
    new = wait_for(lambda: (lambda d: d and d["leaderId"] not in (-1, old) and d["leaderId"])(c.describe()), timeout=10,
                   what="a new leader")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"failover took {elapsed:.2f} s"
    c.admin("topics", "create", "after-failover")
    assert {"before", "after-failover"} <= {t["name"] for t in json.loads(c.admin("--json", "topics", "list"))}
    one_leader_per_term(c)
    print(f"failover: new leader {new} after {elapsed:.2f} s")


def test_a_paused_leader_is_replaced_and_steps_down_when_resumed(cluster):
    c = cluster()
    old = c.leader()
    old_term = c.describe()["term"]
    c.tool("stop", "--node", str(old))
    try:
        new = wait_for(lambda: (lambda d: d and d["leaderId"] not in (-1, old) and d["leaderId"])(c.describe()), timeout=10,
                       what="a leader while the old one is paused")
        assert c.describe()["term"] > old_term
        c.admin("topics", "create", "while-paused")
        time.sleep(10)  # the pause the issue asks for: the old leader stays stopped for 10 s
    finally:
        c.tool("cont", "--node", str(old))
    # Resumed, the old leader learns the newer term and follows.
    address = c.controller(old)["listeners"]["controller"]
    wait_for(lambda: (lambda d: d and d["leaderId"] == new)(c.describe(address)), timeout=10, what="the old leader to follow")
    one_leader_per_term(c)
    c.admin("topics", "create", "after-resume")


def test_restarting_every_controller_keeps_the_state(cluster):
    c = cluster(config="metadata-snapshot-entries: 5\n")
    names = [f"kept-{i}" for i in range(20)]
    for name in names:
        c.admin("topics", "create", name, "--partitions", "2")
    before = json.loads(c.admin("--json", "topics", "list"))
    cluster_id = c.describe()["clusterID"]
    snapshots = [os.path.join(p["dataDir"], "metadata", "snapshot.bin") for p in c.info["processes"] if p["role"] == "controller"]
    assert all(os.path.exists(s) for s in snapshots), "the metadata log was compacted into snapshots"
    c.tool("down")
    c.up()
    assert json.loads(c.admin("--json", "topics", "list")) == before
    assert c.describe()["clusterID"] == cluster_id


def test_adding_and_removing_a_voter_under_load(cluster):
    c = cluster()
    admin = AdminClient({"bootstrap.servers": c.info["bootstrap"]})
    created, failed = [], []
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            name = f"load-{i}"
            try:
                admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
                created.append(name)
            except Exception as error:  # noqa: BLE001 - recorded and asserted below
                failed.append((name, repr(error)))
            i += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        new_id, listener = c.tool("add-controller").split()
        c.admin("controllers", "add", "--id", new_id, "--listener", listener)
        wait_for(lambda: (lambda d: d and len(d["voters"]) == 4 and all(v["lag"] == 0 for v in d["voters"]))(c.describe()),
                 timeout=20, what="four caught-up voters")
        leader = c.leader()
        c.admin("controllers", "remove", "--id", str(leader))
        wait_for(lambda: (lambda d: d and len(d["voters"]) == 3 and d["leaderId"] not in (-1, leader))(c.describe()),
                 timeout=20, what="three voters without the removed leader")
        time.sleep(1)
    finally:
        stop.set()
        thread.join(60)
    assert failed == []
    assert len(created) > 10
    listed = {t["name"] for t in json.loads(c.admin("--json", "topics", "list"))}
    assert set(created) <= listed
    one_leader_per_term(c)


def test_a_silent_data_node_is_fenced_and_registers_again(cluster):
    """SIGSTOP a data node: its ring neighbour suspects it and the controllers, not hearing from it
    for suspected-node-timeout-ms, fence it; resumed, it registers again with a new incarnation."""
    c = cluster(nodes=2, config="suspected-node-timeout-ms: 3000\n")
    node = lambda d, i: next(n for n in d["nodes"] if n["id"] == i)  # noqa: E731
    before = wait_for(lambda: (lambda d: d and len(d["nodes"]) == 2 and all(n["state"] == "active" for n in d["nodes"]) and d)(c.describe()),
                      what="two active data nodes")
    first = node(before, 102)
    assert first["port"] > 0 and first["incarnation"] > 0 and first["appliedOffset"] >= 0
    survivor = next(p for p in c.info["processes"] if p["id"] == 101)["listeners"]["kafka"]
    c.tool("stop", "--node", "102")
    try:
        fenced = wait_for(lambda: (lambda d: d and node(d, 102)["state"] == "fenced" and d)(c.describe(survivor)), timeout=15,
                          what="node 102 fenced")
        assert fenced["term"] == before["term"]
        assert node(fenced, 102)["lastHeartbeatAgeMs"] >= 3000
        # Once the survivor has applied the fencing record, clients are no longer sent there.
        wait_for(lambda: [b["id"] for b in c.describe(survivor)["brokers"]] == [101], timeout=5, what="node 102 left out of brokers")
    finally:
        c.tool("cont", "--node", "102")
    again = wait_for(lambda: (lambda d: d and node(d, 102)["state"] == "active" and d)(c.describe()), timeout=15,
                     what="node 102 registered again")
    assert node(again, 102)["incarnation"] > first["incarnation"]


def test_ring_describe_shows_allocated_tokens_and_placement(cluster):
    """Three data nodes get 16 controller-allocated tokens each; ring describe (through a node
    or a controller) shows each owning about a third of the ring, leading and serving its
    partitions, and each node's Chord view of its tokens' successors; a restarted node keeps its
    tokens."""
    c = cluster(nodes=3)
    wait_for(lambda: (lambda d: d and len(d["nodes"]) == 3 and all(n["state"] == "active" for n in d["nodes"]))(c.describe()),
             what="three active data nodes")
    c.admin("topics", "create", "placed", "--partitions", "300")

    def ring(address):
        result = subprocess.run([ADMIN_BIN, "--bootstrap", address, "--json", "ring", "describe"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    node_address = next(p for p in c.info["processes"] if p["id"] == 101)["listeners"]["kafka"]
    controller_address = next(p for p in c.info["processes"] if p["role"] == "controller")["listeners"]["controller"]
    through_node = wait_for(lambda: (lambda r: r["partitions"] == 300 and r)(ring(node_address)), what="the topic in the node's image")
    through_controller = ring(controller_address)
    assert through_controller["answeredBy"] == -1 and through_node["answeredBy"] == 101
    from_image = lambda r: [{k: n[k] for k in ("id", "state", "arcs", "ownership", "partitions")} for n in r["nodes"]]  # noqa: E731
    assert from_image(through_node) == from_image(through_controller)
    nodes = through_node["nodes"]
    assert sorted(n["id"] for n in nodes) == [101, 102, 103]
    assert all(len(n["arcs"]) == 16 and n["state"] == "active" for n in nodes)
    assert abs(sum(n["ownership"] for n in nodes) - 1.0) < 1e-9
    # The controllers' allocation keeps shares near a third each (random tokens would not).
    assert all(0.28 < n["ownership"] < 0.39 for n in nodes), [n["ownership"] for n in nodes]
    assert sum(n["partitions"] for n in nodes) == 300 and all(n["partitions"] > 60 for n in nodes)
    tokens = {n["id"]: [a["token"] for a in n["arcs"]] for n in nodes}
    epoch = through_node["ringEpoch"]
    # Each node serves what placement gives it, and its Chord sees each token's true successor.
    ordered = sorted((int(t, 16), node) for node, ts in tokens.items() for t in ts)
    successor = {ordered[i][0]: ordered[(i + 1) % len(ordered)] for i in range(len(ordered))}

    def settled(r):
        return all(n["served"] == n["partitions"] and len(n["view"]) == 16 and all(
            v["successor"] == "{1}@{0:016x}".format(*successor[int(v["token"], 16)]) for v in n["view"]) for n in r["nodes"])
    wait_for(lambda: settled(ring(node_address)), what="every node serving its partitions and seeing its successors")

    c.tool("kill", "--node", "102")
    c.tool("start", "--node", "102")
    again = wait_for(lambda: (lambda r: r["ringEpoch"] > epoch and all(n["state"] == "active" for n in r["nodes"]) and r)(ring(node_address)),
                     timeout=30, what="node 102 registered again")
    assert {n["id"]: [a["token"] for a in n["arcs"]] for n in again["nodes"]} == tokens
