"""Stalls of the event loops show in the log and the metrics: a broker stopped with SIGSTOP."""
import os
import signal
import time

from conftest import free_port, metrics, wait_for


def test_a_stopped_broker_reports_its_loops_stalled(make_rafka):
    port = free_port()
    broker = make_rafka(extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
    before = metrics(port)["rafka_event_loop_stalls_total"]
    logged = broker.logs().count("stalled for")
    os.kill(broker.proc.pid, signal.SIGSTOP)
    time.sleep(0.5)
    os.kill(broker.proc.pid, signal.SIGCONT)
    wait_for(lambda: broker.logs().count("stalled for") > logged, what="a logged stall")
    scraped = metrics(port)
    assert scraped["rafka_event_loop_stalls_total"] >= before + 1
    assert scraped["rafka_event_loop_longest_stall_seconds"] >= 0.3
    assert scraped["rafka_event_loop_stalled_seconds_total"] >= 0.3
