#!/usr/bin/env python3
"""A consumer catching up from a slow disk, beside producers and a tail consumer on the same broker.

Usage (as root): benchmarks/slow_disk.py [--iops 20] [--records 300000] [--seconds 10]

A consumer far behind reads from the device. Where a broker's threads wait for those reads,
everyone whose requests those threads also serve waits with them. This puts the broker's data
on a device that answers --iops reads per second and measures a producer and tail consumer of
another topic (rafka-bench e2e) alone and while such a consumer reads:

1. An ext4 file system on a loop device (a file under /var/tmp) holds the broker's data, and a
   cgroup limits reads from that device to --iops per second (cgroup v1 blkio throttling, or
   cgroup v2 io.max). The limit applies only to the broker, only once it is moved there.
2. --records records of 1 KiB (uncompressed, 2 partitions, 16 MiB segments) in topic `old`; the
   broker is restarted, the OS page cache dropped, and the broker moved into the cgroup.
3. rafka-bench e2e on topic `live0` (8 partitions, 50,000 records/s, 1 ms linger, --seconds
   after 2 s of warm-up) with nothing else running; then the same on topic `live`, with a
   consumer reading `old` from its earliest offset from 1.5 s into the run to its end.
Prints both runs' end-to-end latency and what the catching-up consumer read."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE, Broker, bench, build_rafka, say

CGROUP_NAME = "rafka-slow-disk"


class SlowDevice:
    """A file system on a loop device whose reads, for processes moved into `cgroup`, are limited."""

    def __init__(self, iops):
        descriptor, self.image = tempfile.mkstemp(prefix="rafka-slow-disk-", suffix=".img", dir="/var/tmp")
        os.close(descriptor)
        self.mount = tempfile.mkdtemp(prefix="rafka-slow-disk-")
        subprocess.run(["truncate", "-s", "3G", self.image], check=True)
        self.loop = subprocess.run(["losetup", "-f", "--show", self.image], check=True, capture_output=True,
                                   text=True).stdout.strip()
        subprocess.run(["mkfs.ext4", "-q", self.loop], check=True)
        subprocess.run(["mount", self.loop, self.mount], check=True)
        device = subprocess.run(["lsblk", "-dno", "MAJ:MIN", self.loop], check=True, capture_output=True,
                                text=True).stdout.strip()
        if os.path.isdir("/sys/fs/cgroup/blkio"):
            self.cgroup = f"/sys/fs/cgroup/blkio/{CGROUP_NAME}"
            os.makedirs(self.cgroup, exist_ok=True)
            self.write("blkio.throttle.read_iops_device", f"{device} {iops}")
        else:
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+io")
            self.cgroup = f"/sys/fs/cgroup/{CGROUP_NAME}"
            os.makedirs(self.cgroup, exist_ok=True)
            self.write("io.max", f"{device} riops={iops}")

    def write(self, name, value):
        with open(os.path.join(self.cgroup, name), "w") as f:
            f.write(value + "\n")

    def enter(self, pid):
        self.write("cgroup.procs", str(pid))

    def remove(self):
        subprocess.run(["umount", self.mount])
        subprocess.run(["losetup", "-d", self.loop])
        os.remove(self.image)
        os.rmdir(self.mount)
        for _ in range(50):  # the broker's threads leave the cgroup as it exits
            try:
                os.rmdir(self.cgroup)
                return
            except OSError:
                time.sleep(0.1)


def start(directory):
    return Broker("rafka", lambda port, d: [os.path.join(RELEASE, "rafka"), "standalone", "--data-dir",
                                            os.path.join(d, "data"), "--listen", f"127.0.0.1:{port}",
                                            "--config", os.path.join(d, "rafka.yaml"), "--log-level", "warning"],
                  data_dir=directory)


def live(broker, topic, seconds):
    return ["e2e", broker.bootstrap, "--topic", topic, "--partitions", 8, "--rate", 50_000, "--linger-ms", 1,
            "--duration", seconds, "--warmup", 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iops", type=int, default=20)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("slow_disk.py needs root: it makes a loop device and a cgroup")
    if not args.no_build:
        build_rafka()
    device = SlowDevice(args.iops)
    broker = None
    try:
        directory = tempfile.mkdtemp(dir=device.mount)
        with open(os.path.join(directory, "rafka.yaml"), "w") as f:
            f.write("hot-cache-bytes: 67108864\ntopic-defaults:\n  segment.bytes: \"16777216\"\n")
        broker = start(directory)
        say(f"producing {args.records} records into `old`")
        bench("produce", broker.bootstrap, "--topic", "old", "--partitions", 2, "--compression", "none",
              "--records", args.records, "--warmup", 0)
        broker.proc.terminate()
        broker.proc.wait(60)
        broker.log.close()
        broker = start(directory)
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        device.enter(broker.pid)
        say(f"restarted, page cache dropped, reads of the broker's device limited to {args.iops}/s")
        say("e2e on `live0` alone")
        alone = bench(*live(broker, "live0", args.seconds))
        say("e2e on `live` while a consumer reads `old` from the start")
        catching_up = []

        def catch_up():
            catching_up.append(bench("consume", broker.bootstrap, "--topic", "old", "--from", "earliest",
                                     "--duration", args.seconds + 1, "--warmup", 0))

        reader = threading.Timer(1.5, catch_up)
        reader.start()
        beside = bench(*live(broker, "live", args.seconds))
        reader.join()
    finally:
        if broker:
            broker.stop()
        device.remove()
    print(f"rafka-bench e2e, 50,000 records/s on 8 partitions, the broker's device limited to {args.iops} reads/s:")
    print("| run | e2e p50 ms | p99 ms | p99.9 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in (("alone", alone), ("a consumer catching up beside it", beside)):
        latency = result["endToEndLatency"]
        print(f"| {name} | {latency['p50']:.2f} | {latency['p99']:.2f} | {latency['p999']:.2f} | {latency['max']:.1f} |")
    old = catching_up[0]
    print(f"the catching-up consumer read {old['records']:,} records ({old['recordsPerSecond']:,.0f}/s, "
          f"fetch p99 {old['fetchLatency']['p99']:.0f} ms)")


if __name__ == "__main__":
    main()
