"""Hostile input against a real rafka process: each bad connection is closed (or answered with a
Kafka error), other clients are served throughout, and memory stays bounded."""
import os
import random
import socket
import struct
import subprocess
import threading
import time

import confluent_kafka as ck
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import BENCH_BIN, free_port, metrics


def frame(body):
    return struct.pack(">i", len(body)) + body


def header(api_key, version, correlation, client=b"hostile"):
    return struct.pack(">hhih", api_key, version, correlation, len(client)) + client


def api_versions_v0(correlation):
    return frame(header(18, 0, correlation))


def closed_by_peer(sock, timeout=10):
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def read_frame(sock, timeout=10):
    sock.settimeout(timeout)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def still_serves(rafka):
    with socket.create_connection(("127.0.0.1", rafka.port), timeout=10) as sock:
        sock.sendall(api_versions_v0(4242))
        body = read_frame(sock)
        return struct.unpack(">ih", body[:6]) == (4242, 0)


def test_malformed_frames_close_only_their_connection(rafka):
    cases = {
        "negative length": struct.pack(">i", -7),
        "huge length": struct.pack(">i", 2_000_000_000),
        "unknown api key": frame(header(4000, 0, 1)),
        "unsupported produce version": frame(header(0, 1, 1) + b"\x00" * 20),
        "body shorter than its fields": frame(header(3, 1, 1) + struct.pack(">i", 50)),
        "length lies about the string": frame(struct.pack(">hhih", 3, 1, 1, 30000) + b"abc"),
    }
    for name, data in cases.items():
        with socket.create_connection(("127.0.0.1", rafka.port)) as sock:
            sock.sendall(data)
            assert closed_by_peer(sock), name
        assert still_serves(rafka), name
    assert "closing connection" in rafka.logs()


def test_random_bytes_and_truncated_frames(rafka):
    rng = random.Random(7)
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", rafka.port)) as sock:
            if rng.random() < 0.5:
                sock.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))))
            else:
                whole = api_versions_v0(1)
                sock.sendall(whole[: rng.randint(1, len(whole) - 1)])  # then hang up mid-frame
    assert still_serves(rafka)


def produce_frame(topic, records, correlation, acks=1):
    """A hand-built Produce v3 request (non-flexible) for one partition."""
    body = header(0, 3, correlation)
    body += struct.pack(">hhi", -1, acks, 30000)  # null transactional id, acks, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(records)) + records
    return frame(body)


def produce_error(sock, correlation):
    body = read_frame(sock)
    assert struct.unpack(">i", body[:4])[0] == correlation
    # topics[1]: name, partitions[1]: index, error code …
    name_len = struct.unpack(">h", body[8:10])[0]
    position = 10 + name_len + 4
    return struct.unpack(">ih", body[position:position + 6])[1]


def batch(count=3):
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(count):
        builder.append(i, timestamp=int(time.time() * 1000), key=None, value=b"value-%d" % i, headers=[])
    return bytes(builder.build())


def test_wrong_crc_and_lying_batch_lengths_answer_kafka_errors(rafka):
    rafka.admin("topics", "create", "crc")
    good = batch()
    with socket.create_connection(("127.0.0.1", rafka.port)) as sock:
        sock.sendall(produce_frame(b"crc", good, 1))
        assert produce_error(sock, 1) == 0
        flipped = bytearray(good)
        flipped[-1] ^= 0xFF
        sock.sendall(produce_frame(b"crc", bytes(flipped), 2))
        assert produce_error(sock, 2) == 2  # CORRUPT_MESSAGE
        lying = bytearray(good)
        lying[8:12] = struct.pack(">i", 10_000_000)  # batch length far past the bytes sent
        sock.sendall(produce_frame(b"crc", bytes(lying), 3))
        assert produce_error(sock, 3) == 2
        wrong_count = bytearray(good)
        wrong_count[57:61] = struct.pack(">i", 9)
        sock.sendall(produce_frame(b"crc", bytes(wrong_count), 4))
        assert produce_error(sock, 4) in (2, 87)  # CORRUPT_MESSAGE (CRC covers the count) / INVALID_RECORD
    # Only the good batch was stored.
    low, high = ck.Consumer({"bootstrap.servers": rafka.bootstrap, "group.id": "x"}).get_watermark_offsets(
        ck.TopicPartition("crc", 0), timeout=10)
    assert (low, high) == (0, 3)


def test_oversized_records_are_message_too_large(rafka):
    rafka.admin("topics", "create", "small", "--config", "max.message.bytes=10000")
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "message.max.bytes": 1_000_000})
    errors = []
    producer.produce("small", value=os.urandom(50_000), on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    producer.produce("small", value=b"fits", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    codes = sorted(e.code() if e else 0 for e in errors)
    assert codes == sorted([0, ck.KafkaError.MSG_SIZE_TOO_LARGE])


def test_300_concurrent_connections_with_bounded_memory(make_rafka):
    # 128 MiB of request memory for all connections together.
    rafka = make_rafka(config_text="max-request-memory-bytes: 134217728\n")
    baseline = rafka.rss_kib()
    sockets = []
    for i in range(300):
        sock = socket.create_connection(("127.0.0.1", rafka.port))
        if i % 3 == 1:
            # Claims a 90 MB request, sends up to 2 MB of it and stalls: 200 MB offered in all.
            sock.setblocking(False)
            try:
                sock.send(struct.pack(">i", 90_000_000) + header(0, 9, 1) + b"\x00" * 2_000_000)
            except BlockingIOError:
                pass  # the broker stopped reading this one: its budget is spent
        elif i % 3 == 2:
            sock.sendall(api_versions_v0(i))
        sockets.append(sock)
    # While they sit there, a real client works normally.
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap, "linger.ms": 5})
    for i in range(5000):
        producer.produce("busy", value=b"%d" % i)
    assert producer.flush(30) == 0
    consumer = ck.Consumer({"bootstrap.servers": rafka.bootstrap, "group.id": "busy", "enable.auto.commit": False})
    consumer.assign([ck.TopicPartition("busy", 0, ck.OFFSET_BEGINNING)])
    got = 0
    deadline = time.monotonic() + 30
    while got < 5000 and time.monotonic() < deadline:
        got += len([m for m in consumer.consume(1000, timeout=1) if m.error() is None])
    consumer.close()
    assert got == 5000
    for i, sock in enumerate(sockets):
        if i % 3 == 2:
            assert struct.unpack(">i", read_frame(sock)[:4])[0] == i
    growth_mib = (rafka.rss_kib() - baseline) / 1024
    for sock in sockets:
        sock.close()
    assert growth_mib < 200, f"RSS grew {growth_mib:.0f} MiB with 300 connections"
    assert still_serves(rafka)


def fetch_v4(topic, offset, correlation, max_bytes):
    body = header(1, 4, correlation) + struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)
    body += struct.pack(">ih", 1, len(topic)) + topic + struct.pack(">iiqi", 1, 0, offset, max_bytes)
    return frame(body)


def test_pipelined_fetches_of_cold_records_take_bounded_memory(make_rafka):
    # Records behind the hot cache that the page cache does not hold are read into memory off the
    # event loops; what such reads hold until their responses are written is bounded (32 MiB here).
    rafka = make_rafka(config_text="hot-cache-bytes: 0\nmax-read-memory-bytes: 33554432\n")
    subprocess.run([BENCH_BIN, "produce", "--bootstrap", rafka.bootstrap, "--topic", "cold", "--partitions", "1",
                    "--compression", "none", "--records", "100000", "--warmup", "0", "--json"],
                   check=True, capture_output=True, timeout=120)
    # The segments' pages leave the OS page cache (as root or not), so fetches find them cold.
    subprocess.run(["sync"], check=True)
    for folder, _, names in os.walk(rafka.data_dir):
        for name in names:
            if name.endswith(".log"):
                descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(descriptor)
    baseline = rafka.rss_kib()
    # 64 fetches of 64 MiB each from offset 0 at once, and nothing of their answers read: 4 GiB
    # if each read its records into memory.
    hostile = socket.create_connection(("127.0.0.1", rafka.port))
    hostile.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hostile.sendall(b"".join(fetch_v4(b"cold", 0, i, 64 << 20) for i in range(64)))
    peak = baseline
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, rafka.rss_kib())
        time.sleep(0.1)
    # Meanwhile a consumer reads every record.
    out = subprocess.run(["kcat", "-C", "-b", rafka.bootstrap, "-t", "cold", "-e", "-q", "-f", "%o\n"],
                         capture_output=True, text=True, timeout=120).stdout
    peak = max(peak, rafka.rss_kib())
    assert len(out.split()) >= 100000
    hostile.close()
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 200, f"RSS grew {growth_mib:.0f} MiB with 64 pipelined fetches of cold records"
    assert still_serves(rafka)


def test_pipelined_fetches_left_unread_cannot_keep_the_hot_cache_s_batches(make_rafka):
    # A response holds the hot cache's batches until it is written; one the client never reads
    # keeps them after the cache has let them go. Connection after connection, each asking for
    # the cache's newest 50 MB and reading nothing while producers replace them, would take
    # 50 MB each: the batches in unwritten responses count against max-read-memory-bytes (32 MiB
    # here), and past it the records are sent from their segment files.
    metrics_port = free_port()
    rafka = make_rafka(["--metrics-listen", f"127.0.0.1:{metrics_port}"],
                       config_text="hot-cache-bytes: 67108864\nmax-read-memory-bytes: 33554432\n")
    baseline = None
    hostile = []
    for round_ in range(6):
        subprocess.run([BENCH_BIN, "produce", "--bootstrap", rafka.bootstrap, "--topic", "pinned", "--partitions", "1",
                        "--compression", "none", "--records", "70000", "--warmup", "0", "--json"],
                       check=True, capture_output=True, timeout=120)
        if baseline is None:
            baseline = rafka.rss_kib()
        end = 70000 * (round_ + 1)
        sock = socket.create_connection(("127.0.0.1", rafka.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"".join(fetch_v4(b"pinned", end - 50000, i, 64 << 20) for i in range(4)))
        hostile.append(sock)
    time.sleep(1)
    growth_mib = (rafka.rss_kib() - baseline) / 1024
    # Meanwhile a consumer reads the newest records.
    out = subprocess.run(["kcat", "-C", "-b", rafka.bootstrap, "-t", "pinned", "-o", "-1000", "-e", "-q", "-f", "%o\n"],
                         capture_output=True, text=True, timeout=60).stdout
    assert len(out.split()) == 1000
    for sock in hostile:
        sock.close()
    assert growth_mib < 150, f"RSS grew {growth_mib:.0f} MiB with six connections holding the cache's batches"
    assert metrics(metrics_port)["rafka_read_memory_refusals_total"] > 0
    assert still_serves(rafka)


def metadata_v1(correlation):
    return frame(header(3, 1, correlation) + struct.pack(">i", -1))


def test_pipelined_requests_with_large_answers_left_unread_take_bounded_memory(make_rafka):
    # A few bytes ask for a Metadata answer of 50 KB here (2,000 partitions). A client that sends
    # 3,000 such requests at once and reads nothing gets one answer at a time until its socket
    # fills, not all it sent (150 MB) nor the 64 a connection may have in flight (8 connections:
    # 176 MiB when they were started together, 17 MiB one at a time): the rest wait unstarted.
    rafka = make_rafka()
    rafka.admin("topics", "create", "wide", "--partitions", "2000")
    probe = socket.create_connection(("127.0.0.1", rafka.port))
    probe.sendall(metadata_v1(0))
    answer = read_frame(probe)
    probe.close()
    assert len(answer) > 40000
    baseline = rafka.rss_kib()
    hostile = []
    for _ in range(8):
        sock = socket.create_connection(("127.0.0.1", rafka.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"".join(metadata_v1(i) for i in range(3000)))
        hostile.append(sock)
    peak = baseline
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, rafka.rss_kib())
        time.sleep(0.1)
    assert still_serves(rafka)
    for sock in hostile:
        sock.close()
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 60, f"RSS grew {growth_mib:.0f} MiB with 24,000 pipelined Metadata requests left unread"
