"""Fixtures for the real-client suite: `rafka standalone` processes started the way a user
starts them (the binary, --data-dir, --listen), on 127.0.0.1 with free ports.

tools/dev test sets RAFKA_BIN, RAFKA_ADMIN_BIN and RAFKA_BENCH_BIN to the release binaries."""
import glob
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAFKA_BIN = os.environ.get("RAFKA_BIN", os.path.join(ROOT, ".build", "release", "rafka"))
ADMIN_BIN = os.environ.get("RAFKA_ADMIN_BIN", os.path.join(ROOT, ".build", "release", "rafka-admin"))
BENCH_BIN = os.environ.get("RAFKA_BENCH_BIN", os.path.join(ROOT, ".build", "release", "rafka-bench"))


sys.path.insert(0, os.path.join(ROOT, "tools"))
from ports import free_port  # noqa: E402  (re-exported to the tests)


def stored_codecs(rafka, topic):
    """The compression codecs (attribute bits 0-2) of the batches in partition 0's segments, read from the broker's files."""
    codecs = set()
    for path in glob.glob(os.path.join(rafka.data_dir, "logs", f"{topic}-0", "*.log")):
        with open(path, "rb") as f:
            data = f.read()
        position = 0
        while position + 61 <= len(data):
            length = struct.unpack(">i", data[position + 8:position + 12])[0]
            if length <= 0:
                break
            codecs.add(struct.unpack(">h", data[position + 21:position + 23])[0] & 7)
            position += 12 + length
    return codecs


def metrics(port):
    """GET /metrics from `metrics-listen` on `port`, as {name{labels}: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+)(\{[^}]*\})? (\S+)$', line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def wait_for(predicate, timeout=20.0, what="condition"):
    """Polls `predicate` until it is truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Rafka:
    """One rafka standalone process and its data directory."""

    def __init__(self, data_dir, extra_args=(), config=None):
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.config = config
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"rafka-{self.port}.log")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [RAFKA_BIN, "standalone", "--data-dir", self.data_dir, "--listen", self.bootstrap]
        if self.config:
            args += ["--config", self.config]
        args += self.extra_args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._accepting, what=f"rafka on {self.bootstrap}")
        return self

    def _accepting(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"rafka exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the process with `sig`; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def admin(self, *args, check=True):
        """Runs rafka-admin against this broker; returns (exit code, stdout, stderr)."""
        result = subprocess.run([ADMIN_BIN, "--bootstrap", self.bootstrap, *args], capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"rafka-admin {' '.join(args)} failed: {result.stderr}")
        return result.returncode, result.stdout, result.stderr

    def admin_json(self, *args):
        return json.loads(self.admin("--json", *args)[1])


@pytest.fixture
def rafka(tmp_path):
    broker = Rafka(tmp_path / "data").start()
    yield broker
    code = broker.stop()
    assert code in (0, -9, None), f"rafka exited with {code}:\n{broker.logs()}"


@pytest.fixture
def make_rafka(tmp_path):
    """Starts brokers with custom arguments or config; all are stopped at the end."""
    started = []

    def make(extra_args=(), config_text=None, name="data"):
        config = None
        if config_text is not None:
            config = str(tmp_path / f"{name}.yaml")
            with open(config, "w") as f:
                f.write(config_text)
        broker = Rafka(tmp_path / name, extra_args, config).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()
