#!/usr/bin/env python3
"""Writes golden encodings of Kafka messages produced by an independent implementation
(kafka-python 3.x, which encodes from Kafka's JSON schemas in Python) for every version of
every message Rafka serves, so the Swift codec tests can check byte-for-byte agreement.

Usage: tools/gen-golden.py   (needs `pip install kafka-python`)

Writes Tests/KafkaProtocolTests/Golden/<Message>-v<N>.bin: the encoded body (no size, no
header) of a message whose every field present in that version is set to a non-default value.
Rerun when the set of served APIs changes; the output is committed test data.
"""
import importlib
import os
import pkgutil
import uuid

import kafka.protocol as kp
from kafka.protocol.api_message import ApiMessage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KafkaProtocolTests", "Golden")

# Rafka's advertised API versions (RequestRouter.supported).
SERVED = {
    "Produce": (3, 10), "Fetch": (4, 13), "ListOffsets": (1, 7), "Metadata": (0, 12), "ApiVersions": (0, 4),
    "CreateTopics": (2, 7), "DeleteTopics": (1, 6), "InitProducerId": (0, 4), "DescribeConfigs": (1, 4),
    "AlterConfigs": (0, 2), "CreatePartitions": (0, 3), "IncrementalAlterConfigs": (0, 1), "DescribeCluster": (0, 1),
}


def message_classes():
    for module in pkgutil.walk_packages(kp.__path__, "kafka.protocol."):
        try:
            importlib.import_module(module.name)
        except Exception:
            pass

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return {c.__name__: c for c in subclasses(ApiMessage) if getattr(c, "_class_version", None) is None}


class Values:
    """Deterministic, non-default values by field type."""

    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n

    def primitive(self, type_str):
        n = self.next()
        return {
            "bool": True, "int8": n % 100 + 1, "int16": n % 30000 + 1, "int32": n * 7919 + 1,
            "int64": n * 1_000_003 + 5_000_000_000, "uint16": n % 60000 + 1, "uint32": n * 31 + 1,
            "float64": n + 0.5, "string": f"s{n}-é", "bytes": bytes([n % 256, 1, 2, 3]),
            "records": bytes([n % 256, 9, 8, 7, 6]), "uuid": uuid.UUID(int=(n + 1) << 64 | (n * 3 + 7)),
            "bitfield": {1, 3, n % 20 + 4},  # authorized operations: an int32 bit set
        }[type_str]


def fill(field_container, version, values):
    kwargs = {}
    for field in field_container._struct.fields.values():
        if not field.for_version_q(version):
            continue
        type_str = field.type_str
        if field.is_struct_array():
            kwargs[field.name] = [fill(field.data_class, version, values) for _ in range(2)]
        elif field.is_struct():
            kwargs[field.name] = fill(field.data_class, version, values)
        elif type_str.startswith("[]"):
            kwargs[field.name] = [values.primitive(type_str[2:]) for _ in range(2)]
        else:
            kwargs[field.name] = values.primitive(type_str)
    return field_container(version=version, **kwargs)


def main():
    classes = message_classes()
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        os.remove(os.path.join(OUT, old))
    written = 0
    for api, (low, high) in sorted(SERVED.items()):
        for kind in ("Request", "Response"):
            cls = classes[api + kind]
            for version in range(low, high + 1):
                message = fill(cls, version, Values())
                data = message.encode(version=version)
                with open(os.path.join(OUT, f"{api}{kind}-v{version}.bin"), "wb") as f:
                    f.write(bytes(data))
                written += 1
    print(f"wrote {written} golden encodings to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
