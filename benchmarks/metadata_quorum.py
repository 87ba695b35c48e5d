#!/usr/bin/env python3
"""Metadata quorum benchmark: a 3-voter controller quorum of real processes (tools/cluster),
fsync on (the metadata log is always fsynced before a vote or an acknowledgement).

Measures, against the leader:
  - commit latency: sequential CreateTopics, each committed on a majority and applied (p50/p99);
  - proposals/s: CreateTopics from several connections at once;
  - failover: kill -9 of the leader, N times, until a survivor names a new leader.

Usage: benchmarks/metadata_quorum.py [--creates 2000] [--clients 8] [--seconds 5] [--kills 20]
Uses .build/release/rafka (or $RAFKA_BIN).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "tools", "cluster")


class Connection:
    """Just enough of the Kafka protocol: CreateTopics v2 and DescribeQuorum v0."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation = 0

    def round_trip(self, api_key, version, body, flexible):
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, 5) + b"bench"
        if flexible:
            header += b"\x00"
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self.recv(4))[0]
        return self.recv(size)

    def recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def create_topic(self, name):
        encoded = name.encode()
        body = struct.pack(">i", 1) + struct.pack(">h", len(encoded)) + encoded
        body += struct.pack(">ihii", 1, 1, 0, 0) + struct.pack(">i?", 30000, False)
        response = self.round_trip(19, 2, body, flexible=False)
        # correlation, throttle, topics count, name, error code
        name_length = struct.unpack(">h", response[12:14])[0]
        return struct.unpack(">h", response[14 + name_length:16 + name_length])[0]

    def quorum_leader(self):
        name = b"__cluster_metadata"
        body = b"\x02" + bytes([len(name) + 1]) + name + b"\x02" + struct.pack(">i", 0) + b"\x00\x00\x00"
        response = self.round_trip(55, 0, body, flexible=True)
        position = 4 + 1 + 2 + 1  # correlation, header tags, error code, topics count
        position += 1 + response[position] - 1  # topic name (compact string, short)
        position += 1  # partitions count
        leader, epoch = struct.unpack(">ii", response[position + 6:position + 14])
        return leader, epoch


def tool(directory, *args):
    return subprocess.run([CLUSTER, *args, "--dir", directory], capture_output=True, text=True, check=True).stdout.strip()


def controllers(directory):
    with open(os.path.join(directory, "cluster.json")) as f:
        return {p["id"]: p["listeners"]["controller"] for p in json.load(f)["processes"] if p["role"] == "controller"}


def find_leader(addresses, exclude=()):
    for node, address in addresses.items():
        if node in exclude:
            continue
        try:
            leader, _ = Connection(address).quorum_leader()
            if leader >= 0 and leader not in exclude:
                return leader
        except OSError:
            continue
    return None


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="rafka-quorum-bench-")
    try:
        tool(directory, "up", "--controllers", "3", "--nodes", "0")
        addresses = controllers(directory)
        leader = find_leader(addresses)
        connection = Connection(addresses[leader])
        for i in range(50):  # warm-up
            connection.create_topic(f"warm-{i}")
        latencies = []
        for i in range(args.creates):
            started = time.perf_counter()
            assert connection.create_topic(f"seq-{i}") == 0
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"commit latency (sequential CreateTopics, {args.creates}): p50 {percentile(latencies, 0.5):.2f} ms, "
              f"p99 {percentile(latencies, 0.99):.2f} ms, max {max(latencies):.2f} ms")

        counts = [0] * args.clients
        deadline = time.monotonic() + args.seconds

        def client(k):
            c = Connection(addresses[leader])
            i = 0
            while time.monotonic() < deadline:
                if c.create_topic(f"par-{k}-{i}") == 0:
                    counts[k] += 1
                i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"proposals/s ({args.clients} connections, {args.seconds:.0f} s): {sum(counts) / (time.monotonic() - started):,.0f}")

        failovers = []
        for _ in range(args.kills):
            old = find_leader(addresses)
            tool(directory, "kill", "--node", str(old))
            started = time.perf_counter()
            while True:
                new = find_leader(addresses, exclude={old})
                if new is not None:
                    failovers.append((time.perf_counter() - started) * 1000)
                    break
                time.sleep(0.005)
            tool(directory, "start", "--node", str(old))
            time.sleep(1.5)  # let the restarted voter catch up before the next kill
        print(f"failover over {args.kills} leader kills (kill -9 until a survivor names a new leader): "
              f"min {min(failovers):.0f} ms, p50 {statistics.median(failovers):.0f} ms, max {max(failovers):.0f} ms")
    finally:
        subprocess.run([CLUSTER, "down", "--dir", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
