#!/usr/bin/env python3
"""Memory per idle partition: rafka standalone's resident memory before and after a topic of
--partitions partitions is created (and every partition opened), per partition.

Usage: benchmarks/idle_partitions.py [--partitions 10000]

Prints the resident memory (RSS) before, after, and the difference per partition, with the
time the creation took and the open file descriptors."""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE, build_rafka, process_sample, rafka, say


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build_rafka()
    broker = rafka()
    try:
        time.sleep(2)
        _, before = process_sample(broker.pid)
        start = time.monotonic()
        subprocess.run([os.path.join(RELEASE, "rafka-admin"), "--bootstrap", broker.bootstrap, "topics", "create", "idle",
                        "--partitions", str(args.partitions)], check=True, stdout=subprocess.DEVNULL)
        created = time.monotonic() - start
        # Let allocations settle (the metadata snapshot, the first maintenance passes).
        time.sleep(5)
        _, after = process_sample(broker.pid)
        descriptors = len(os.listdir(f"/proc/{broker.pid}/fd"))
    finally:
        broker.stop()
    per = (after - before) / args.partitions
    print(f"partitions={args.partitions} create_s={created:.2f} rss_before_MiB={before / 2**20:.1f} "
          f"rss_after_MiB={after / 2**20:.1f} per_partition_KiB={per / 1024:.1f} open_fds={descriptors}")


if __name__ == "__main__":
    main()
