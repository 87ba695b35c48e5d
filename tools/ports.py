"""Free TCP ports on 127.0.0.1 for brokers that tests, benchmarks and tools/cluster start."""
import random
import socket


def free_port():
    """A port free now, below the kernel's ephemeral range. A port is chosen before the process
    that listens on it starts, and a port from that range can meanwhile become the local end of
    another process's outgoing connection (a node to a controller, a client to a broker), so that
    the process given it cannot bind it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, max(10001, ephemeral_low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
