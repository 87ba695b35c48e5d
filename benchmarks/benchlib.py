"""Shared by the benchmark scripts: building Rafka, starting brokers on free loopback ports,
running rafka-bench, reading a process's CPU and memory, installing what a run needs."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, ".build", "release")
PEERS = os.path.join(ROOT, "benchmarks", ".peers")


def say(text):
    print(f"==> {text}", file=sys.stderr, flush=True)


sys.path.insert(0, os.path.join(ROOT, "tools"))
from ports import free_port  # noqa: E402  (re-exported to the benchmarks)


def wait_for_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def build_rafka():
    say("building rafka, rafka-admin and rafka-bench (release)")
    for product in ("rafka", "rafka-admin", "rafka-bench"):
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)


def ensure_debs(packages):
    """Installs missing Debian packages when root; otherwise names the command and stops."""
    missing = [p for p in packages
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing Debian packages; run: sudo apt-get install -y {' '.join(missing)}")
    say(f"installing {' '.join(missing)}")
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, stdout=subprocess.DEVNULL)


def ensure_pip(module, package):
    try:
        __import__(module)
    except ImportError:
        say(f"installing {package} from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def process_sample(pid):
    """(CPU seconds, resident bytes) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/statm") as f:
        resident_pages = int(f.read().split()[1])
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, resident_pages * os.sysconf("SC_PAGE_SIZE")


class Broker:
    """A broker process on a free port with its own temporary directory."""

    def __init__(self, name, args_for_port, env=None, data_dir=None):
        self.name = name
        self.port = free_port()
        self.dir = data_dir or tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(args_for_port(self.port, self.dir), stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        wait_for_port(self.port, self.proc)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rafka(config_text="", metrics=False):
    """rafka standalone with `config_text` as its YAML configuration; with `metrics`, serving
    Prometheus metrics too (read them with `scrape`)."""
    metrics_port = free_port() if metrics else None

    def args(port, directory):
        config = os.path.join(directory, "rafka.yaml")
        with open(config, "w") as f:
            f.write(config_text)
        return [os.path.join(RELEASE, "rafka"), "standalone", "--data-dir", os.path.join(directory, "data"),
                "--listen", f"127.0.0.1:{port}", "--config", config, "--log-level", "warning",
                *(["--metrics-listen", f"127.0.0.1:{metrics_port}"] if metrics_port else [])]
    broker = Broker("rafka", args)
    broker.metrics_port = metrics_port
    return broker


def scrape(broker):
    """A Rafka broker's metrics, or None without a metrics port: each series by its name and
    labels as written (`rafka_requests_total{api="Produce"}`), and each name alone → the sum over
    its labels."""
    port = getattr(broker, "metrics_port", None)
    if port is None:
        return None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            if name != series:
                values[series] = float(value)
            values[name] = values.get(name, 0.0) + float(value)
    return values


def histogram_quantile(before, after, metric, labels, q):
    """The q-quantile of what a histogram of Rafka's metrics observed between two scrapes,
    interpolated linearly within its bucket (as PromQL's histogram_quantile); None if nothing was."""
    prefix = f'{metric}_bucket{{{labels},le="'
    buckets = sorted((float(series[len(prefix):-2]), after[series] - before.get(series, 0.0))
                     for series in after if series.startswith(prefix))
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def bench(mode, bootstrap, *args, pid=None):
    """Runs rafka-bench and returns its JSON result."""
    command = [os.path.join(RELEASE, "rafka-bench"), mode, "--bootstrap", bootstrap, "--json", *map(str, args)]
    if pid:
        command += ["--broker-pid", str(pid)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"rafka-bench {mode} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)
