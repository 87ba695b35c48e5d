#!/usr/bin/env python3
"""Produce throughput with confluent-kafka against a running broker.

Usage: benchmarks/produce_throughput.py [--bootstrap 127.0.0.1:9092] [--records 1000000]
       [--size 1024] [--compression lz4] [--acks 1] [--topic bench] [--start-rafka]

--start-rafka starts .build/release/rafka standalone on a free port with a temporary data
directory (and removes it afterwards), so one command measures Rafka on this machine.
Records carry random-but-compressible values (half random bytes, half a repeated pattern)
so that lz4 does real work without the data being free to compress.
Prints records/s and MB/s (MB = 10^6 bytes of record values) for the produce phase, from the
first produce() call to the last delivery report.
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import confluent_kafka as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rafka():
    data = tempfile.mkdtemp(prefix="rafka-bench-")
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(ROOT, ".build", "release", "rafka"), "standalone", "--data-dir", data,
         "--listen", f"127.0.0.1:{port}", "--log-level", "warning"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, data, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("rafka did not start")


def broker_cpu_seconds(proc):
    """User + system CPU seconds of the broker process (from /proc), or 0 if not ours."""
    if proc is None:
        return 0.0
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--acks", default="1")
    parser.add_argument("--topic", default=f"bench-{int(time.time())}")
    parser.add_argument("--start-rafka", action="store_true")
    args = parser.parse_args()

    proc = data = None
    if args.start_rafka:
        proc, data, args.bootstrap = start_rafka()
    try:
        rng = random.Random(1)
        values = [rng.randbytes(args.size // 2) + bytes([i % 256]) * (args.size - args.size // 2) for i in range(256)]
        producer = ck.Producer({
            "bootstrap.servers": args.bootstrap, "acks": args.acks, "compression.type": args.compression,
            "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000})
        # Create the topic and warm the connection before timing.
        producer.produce(args.topic, value=b"warm-up", partition=0)
        producer.flush(30)
        delivered = [0]
        failed = [0]

        def on_delivery(err, msg):
            if err:
                failed[0] += 1
            else:
                delivered[0] += 1

        cpu_before = broker_cpu_seconds(proc)
        start = time.perf_counter()
        for i in range(args.records):
            while True:
                try:
                    producer.produce(args.topic, value=values[i & 255], partition=0, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.001)
            if i & 1023 == 0:
                producer.poll(0)
        producer.flush(300)
        elapsed = time.perf_counter() - start
        rate = delivered[0] / elapsed
        print(f"records={delivered[0]} failed={failed[0]} size={args.size} compression={args.compression} acks={args.acks}")
        print(f"elapsed_s={elapsed:.2f} records_per_s={rate:,.0f} MB_per_s={rate * args.size / 1e6:,.1f}")
        if proc:
            cpu = broker_cpu_seconds(proc) - cpu_before
            print(f"broker_cpu_s={cpu:.2f} broker_cpu_util={cpu / elapsed:.0%} broker_cpu_ms_per_MB={cpu * 1000 / (delivered[0] * args.size / 1e6):.2f}")
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
