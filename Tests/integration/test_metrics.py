"""Request and connection metrics with a real client: what confluent-kafka produced and fetched
shows per API on GET /metrics (requests, bytes both ways, durations), connections are counted
as they open and close, and those beyond max-connections as refused."""
import socket

import confluent_kafka as ck

from conftest import free_port, metrics, wait_for


def test_a_clients_requests_and_connections_are_counted(make_rafka):
    port = free_port()
    broker = make_rafka(["--metrics-listen", f"127.0.0.1:{port}"], config_text="max-connections: 8\n")
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": "1"})
    values = [bytes([i]) * 10_000 for i in range(100)]
    for value in values:
        producer.produce("metered", value=value)
        assert producer.flush(30) == 0
    scraped = metrics(port)
    produced = scraped['rafka_requests_total{api="Produce"}']
    assert produced >= 100
    assert scraped['rafka_request_bytes_total{api="Produce"}'] >= 100 * 10_000
    assert scraped['rafka_response_bytes_total{api="Produce"}'] > 0
    assert scraped['rafka_request_duration_seconds_count{api="Produce"}'] == produced
    assert scraped['rafka_request_duration_seconds_bucket{api="Produce",le="+Inf"}'] == produced
    assert scraped['rafka_request_duration_seconds_sum{api="Produce"}'] > 0
    assert scraped['rafka_requests_total{api="Metadata"}'] >= 1
    assert scraped['rafka_connections_open'] >= 1

    consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metered", "fetch.wait.max.ms": 100,
                            "enable.auto.commit": False})
    consumer.assign([ck.TopicPartition("metered", 0, ck.OFFSET_BEGINNING)])
    got = []
    while len(got) < len(values):
        batch = consumer.consume(len(values) - len(got), timeout=30)
        assert batch, f"no records after {len(got)}"
        got += [message.value() for message in batch]
    assert got == values
    scraped = metrics(port)
    fetched = scraped['rafka_requests_total{api="Fetch"}']
    assert fetched >= 1
    assert scraped['rafka_response_bytes_total{api="Fetch"}'] >= 100 * 10_000
    assert scraped['rafka_request_duration_seconds_count{api="Fetch"}'] == fetched
    assert scraped['rafka_connections_accepted_total'] >= scraped['rafka_connections_open'] >= 2

    consumer.close()
    del producer
    wait_for(lambda: metrics(port)['rafka_connections_open'] == 0, what="the clients' connections counted closed")

    # max-connections: 8 open, the ninth is closed at once and counted refused.
    accepted = metrics(port)['rafka_connections_accepted_total']
    host, broker_port = broker.bootstrap.split(":")
    held = [socket.create_connection((host, int(broker_port))) for _ in range(8)]
    wait_for(lambda: metrics(port)['rafka_connections_open'] == 8, what="eight connections open")
    ninth = socket.create_connection((host, int(broker_port)))
    ninth.settimeout(10)
    assert ninth.recv(1) == b""
    scraped = metrics(port)
    assert scraped['rafka_connections_refused_total'] == 1
    assert scraped['rafka_connections_accepted_total'] == accepted + 8
    for connection in held + [ninth]:
        connection.close()
    wait_for(lambda: metrics(port)['rafka_connections_open'] == 0, what="the held connections counted closed")
