"""Configuration as a user gives it: a YAML file, overridden by flags."""
import subprocess

import confluent_kafka as ck

from conftest import RAFKA_BIN


def test_yaml_file_sets_defaults_and_flags_override_it(make_rafka, tmp_path):
    rafka = make_rafka(config_text="""
listen: 127.0.0.1:1            # overridden by --listen
default-partitions: 3
topic-defaults:
  retention.ms: "3600000"
""")
    producer = ck.Producer({"bootstrap.servers": rafka.bootstrap})
    producer.produce("auto-created", value=b"x")
    assert producer.flush(30) == 0
    described = rafka.admin_json("topics", "describe", "auto-created")[0]
    assert len(described["partitions"]) == 3
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "static-broker"


def test_bad_configuration_stops_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("topic-defaults:\n  retention.ms: forever\n")
    result = subprocess.run([RAFKA_BIN, "standalone", "--config", str(config), "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "retention.ms" in result.stderr
