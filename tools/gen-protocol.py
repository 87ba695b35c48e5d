#!/usr/bin/env python3
"""Generates Rafka's Kafka message codecs from Kafka's JSON message schemas.

Usage: tools/gen-protocol.py [SCHEMA_DIR]   (default: ../shared/kafka-protocol/message)

Writes Sources/KafkaProtocol/Generated/*.swift: one file per message (a value type with
`init(from:version:)` and `encode(into:version:)` covering every version in the schema),
`KafkaAPIKey+Generated.swift` (every API key Kafka defines) and
`KafkaErrorCode+Generated.swift` (from error-codes.tsv next to the schema folder).

The output is committed; rerun this script when the schema set or the generator changes.
Only the Python standard library is used.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Sources", "KafkaProtocol", "Generated")

# The messages Rafka decodes and encodes. Requests and responses are generated in pairs.
APIS = [
    "Produce", "Fetch", "ListOffsets", "Metadata", "OffsetCommit", "OffsetFetch",
    "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup", "DescribeGroups",
    "ListGroups", "SaslHandshake", "ApiVersions", "CreateTopics", "DeleteTopics", "DeleteRecords",
    "InitProducerId", "OffsetForLeaderEpoch", "DescribeConfigs", "AlterConfigs",
    "SaslAuthenticate", "CreatePartitions", "DeleteGroups", "IncrementalAlterConfigs",
    "DescribeCluster", "DescribeProducers", "DescribeQuorum", "AddRaftVoter", "RemoveRaftVoter",
]
EXTRA = ["RequestHeader", "ResponseHeader"]

SWIFT_KEYWORDS = {
    "protocol", "default", "internal", "public", "private", "operator", "extension", "repeat",
    "return", "func", "var", "let", "class", "struct", "enum", "in", "is", "as", "where", "case",
    "switch", "import", "init", "self", "Type", "Protocol", "subscript", "static", "nil", "true",
    "false", "try", "throw", "throws", "do", "else", "for", "guard", "if", "while", "break",
    "continue", "fallthrough", "defer", "deinit", "inout", "rethrows", "super", "Self", "Any",
}

PRIMITIVES = {
    "bool": ("Bool", "false"),
    "int8": ("Int8", "0"),
    "int16": ("Int16", "0"),
    "int32": ("Int32", "0"),
    "int64": ("Int64", "0"),
    "uint16": ("UInt16", "0"),
    "uint32": ("UInt32", "0"),
    "float64": ("Double", "0"),
    "string": ("String", '""'),
    "bytes": ("ByteBuffer", "ByteBuffer()"),
    "records": ("ByteBuffer", "ByteBuffer()"),
    "uuid": ("KafkaUUID", ".zero"),
}
READERS = {
    "bool": "readKafkaBool()", "int8": "readKafkaInt8()", "int16": "readKafkaInt16()",
    "int32": "readKafkaInt32()", "int64": "readKafkaInt64()", "uint16": "readKafkaUInt16()",
    "uint32": "readKafkaUInt32()", "float64": "readKafkaFloat64()", "uuid": "readKafkaUUID()",
}
WRITERS = {
    "bool": "writeKafkaBool", "int8": "writeKafkaInt8", "int16": "writeKafkaInt16",
    "int32": "writeKafkaInt32", "int64": "writeKafkaInt64", "uint16": "writeKafkaUInt16",
    "uint32": "writeKafkaUInt32", "float64": "writeKafkaFloat64", "uuid": "writeKafkaUUID",
}


class Versions:
    """A Kafka version range: "3+", "0-4", "2" or "none"."""

    def __init__(self, text):
        text = (text or "none").strip()
        if text == "none":
            self.lo, self.hi = None, None
        elif text.endswith("+"):
            self.lo, self.hi = int(text[:-1]), None
        elif "-" in text:
            a, b = text.split("-")
            self.lo, self.hi = int(a), int(b)
        else:
            self.lo = self.hi = int(text)

    @property
    def empty(self):
        return self.lo is None

    def intersect(self, other):
        if self.empty or other.empty:
            return Versions("none")
        lo = max(self.lo, other.lo)
        his = [h for h in (self.hi, other.hi) if h is not None]
        hi = min(his) if his else None
        if hi is not None and hi < lo:
            return Versions("none")
        v = Versions("none")
        v.lo, v.hi = lo, hi
        return v

    def contains_all(self, other):
        """True when every version of `other` is in self."""
        if other.empty:
            return True
        if self.empty:
            return False
        if other.lo < self.lo:
            return False
        if self.hi is None:
            return True
        return other.hi is not None and other.hi <= self.hi

    def condition(self, valid):
        """A Swift boolean expression over `version`, simplified against the valid range."""
        if self.empty or valid.intersect(self).empty:
            return "false"
        if self.contains_all(valid):
            return "true"
        parts = []
        if self.lo is not None and self.lo > valid.lo:
            parts.append(f"version >= {self.lo}")
        if self.hi is not None and (valid.hi is None or self.hi < valid.hi):
            parts.append(f"version <= {self.hi}")
        return " && ".join(parts) if parts else "true"


def load_schema(path):
    with open(path) as f:
        text = "\n".join(line for line in f.read().splitlines() if not line.strip().startswith("//"))
    return json.loads(text)


def lower_camel(name):
    out = name[0].lower() + name[1:]
    # Acronyms at the start: "URL" -> "url"; keep Kafka names simple.
    m = re.match(r"^([A-Z]+)([A-Z][a-z].*)$", name)
    if m:
        out = m.group(1).lower() + m.group(2)
    elif name.isupper():
        out = name.lower()
    return f"`{out}`" if out in SWIFT_KEYWORDS else out


def bare(name):
    return name.strip("`")


class Field:
    def __init__(self, spec, struct_versions):
        self.spec = spec
        self.name = spec["name"]
        self.swift_name = lower_camel(self.name)
        self.type = spec["type"]
        self.is_array = self.type.startswith("[]")
        self.elem = self.type[2:] if self.is_array else self.type
        self.versions = Versions(spec.get("versions")).intersect(struct_versions)
        self.nullable = Versions(spec.get("nullableVersions"))
        self.tagged = Versions(spec.get("taggedVersions"))
        self.tag = spec.get("tag")
        self.flexible_override = spec.get("flexibleVersions")
        self.default = spec.get("default")
        self.about = spec.get("about", "")
        self.fields = spec.get("fields")

    @property
    def is_struct(self):
        return self.elem not in PRIMITIVES

    @property
    def optional(self):
        return not self.nullable.empty

    def elem_swift(self):
        return PRIMITIVES[self.elem][0] if not self.is_struct else self.elem

    def swift_type(self):
        t = f"[{self.elem_swift()}]" if self.is_array else self.elem_swift()
        return t + "?" if self.optional else t

    def swift_default(self):
        if self.is_array:
            return "nil" if (self.optional and self.default == "null") else "[]"
        if self.is_struct:
            return "nil" if self.optional else f"{self.elem}()"
        if self.optional and (self.default is None or self.default == "null"):
            return "nil"
        if self.default is None or self.default == "":
            return PRIMITIVES[self.elem][1]
        d = str(self.default)
        if self.elem == "bool":
            return d.lower()
        if False:
            return d
        if self.elem in ("string",):
            return json.dumps(d)
        if d.startswith("0x"):
            return str(int(d, 16))
        return d


class Struct:
    def __init__(self, name, fields_spec, versions, registry):
        self.name = name
        self.versions = versions
        self.fields = [Field(f, versions) for f in fields_spec]
        registry[name] = self
        for f in self.fields:
            if f.fields is not None:
                Struct(f.elem, f.fields, f.versions, registry)


def holds_records(field, registry):
    """Whether `field` is a records field or a struct (at any depth) holding one."""
    if field.elem == "records":
        return True
    return field.is_struct and any(holds_records(inner, registry) for inner in registry[field.elem].fields)


def check_records_not_tagged(name, registry):
    """Tagged fields are encoded into a scratch buffer and copied in, but `writeKafkaRecords`
    notes a large batch's place in the buffer it writes to, taking it for the frame's
    (KafkaFrame): a records field inside a tagged field would be spliced at the wrong place.
    No Kafka schema has one; stop rather than generate a wrong encoder if one ever does."""
    for struct in registry.values():
        for field in struct.fields:
            if not field.tagged.empty and holds_records(field, registry):
                raise SystemExit(f"{name}: tagged field {struct.name}.{field.name} holds records; "
                                 "KafkaFrame cannot splice them (see writeKafkaRecords)")


def gen_message(schema, out):
    name = schema["name"]
    valid = Versions(schema["validVersions"])
    flexible = Versions(schema.get("flexibleVersions", "none"))
    registry = {}
    for common in schema.get("commonStructs", []):
        Struct(common["name"], common["fields"], Versions(common.get("versions", "0+")), registry)
    top = Struct(name, schema["fields"], valid, registry)
    check_records_not_tagged(name, registry)

    w = out.append
    w(f"// Generated by tools/gen-protocol.py from {name}.json. Do not edit.")
    w("")
    w("import NIOCore")
    w("")
    kind = schema["type"]
    if kind in ("request", "response"):
        proto = "KafkaRequestMessage" if kind == "request" else "KafkaResponseMessage"
    else:
        proto = "KafkaMessage"
    w(f"/// Kafka's `{name}` (schema versions {schema['validVersions']}, flexible {schema.get('flexibleVersions', 'none')}).")
    w(f"public struct {name}: {proto} {{")
    if kind in ("request", "response"):
        w(f"    public static let apiKey = KafkaAPIKey(rawValue: {schema['apiKey']})")
    hi = valid.hi if valid.hi is not None else valid.lo
    w(f"    public static let schemaVersions: ClosedRange<Int16> = {valid.lo}...{hi}")
    fv = "nil" if flexible.empty else str(flexible.lo)
    w(f"    /// The first version using compact encodings and tagged fields, or nil.")
    w(f"    public static let firstFlexibleVersion: Int16? = {fv}")
    w("")
    emit_struct_body(top, registry, valid, flexible, w, "    ", is_top=True)
    for sname, s in registry.items():
        if s is top:
            continue
        w("")
        w(f"    public struct {sname}: Sendable, Equatable {{")
        emit_struct_body(s, registry, valid, flexible, w, "        ", is_top=False)
        w("    }")
    w("}")
    w("")


def emit_struct_body(s, registry, valid, flexible, w, ind, is_top):
    for f in s.fields:
        doc = f.about.replace("\n", " ")
        if doc:
            w(f"{ind}/// {doc} Versions: {f.spec.get('versions')}.")
        w(f"{ind}public var {f.swift_name}: {f.swift_type()} = {f.swift_default()}")
    w("")
    w(f"{ind}public init() {{}}")
    w("")
    # memberwise initializer
    if s.fields:
        params = ", ".join(f"{bare(f.swift_name)}: {f.swift_type()} = {f.swift_default()}" for f in s.fields)
        w(f"{ind}public init({params}) {{")
        for f in s.fields:
            w(f"{ind}    self.{bare(f.swift_name)} = {bare(f.swift_name)}")
        w(f"{ind}}}")
        w("")
    emit_decoder(s, valid, flexible, w, ind)
    w("")
    emit_encoder(s, valid, flexible, w, ind)


def flex_expr(f, flexible):
    if f.flexible_override == "none" or flexible.empty:
        return "false"
    return "flexible"


def emit_read_value(f, target, w, ind, flexible, valid):
    """Emits code reading field f (in a non-tagged or tagged context) from `buffer` into target."""
    compact = flex_expr(f, flexible)
    nullable_cond = f.nullable.condition(valid)
    if f.is_array:
        w(f"{ind}do {{")
        w(f"{ind}    let count = try buffer.readKafkaArrayCount(compact: {compact})")
        if f.optional:
            w(f"{ind}    if let count {{")
            inner = ind + "        "
        else:
            w(f"{ind}    guard let count else {{ throw KafkaDecodingError(.unexpectedNull, \"{f.name}\") }}")
            inner = ind + "    "
        w(f"{inner}var items: [{f.elem_swift()}] = []")
        # A count is bounded by the bytes left, not by the in-memory size of an element.
        w(f"{inner}items.reserveCapacity(min(count, 1024))")
        w(f"{inner}for _ in 0..<count {{")
        if f.is_struct:
            w(f"{inner}    items.append(try {f.elem}(from: &buffer, version: version))")
        else:
            w(f"{inner}    items.append({read_primitive_expr(f.elem, compact, False)})")
        w(f"{inner}}}")
        w(f"{inner}{target} = items")
        if f.optional:
            w(f"{ind}    }} else {{")
            w(f"{ind}        {target} = nil")
            w(f"{ind}    }}")
        w(f"{ind}}}")
    elif f.is_struct:
        if f.optional and nullable_cond == "true":
            w(f"{ind}if try buffer.readKafkaInt8() < 0 {{")
            w(f"{ind}    {target} = nil")
            w(f"{ind}}} else {{")
            w(f"{ind}    {target} = try {f.elem}(from: &buffer, version: version)")
            w(f"{ind}}}")
        elif f.optional:
            w(f"{ind}if {nullable_cond} {{")
            w(f"{ind}    if try buffer.readKafkaInt8() < 0 {{")
            w(f"{ind}        {target} = nil")
            w(f"{ind}    }} else {{")
            w(f"{ind}        {target} = try {f.elem}(from: &buffer, version: version)")
            w(f"{ind}    }}")
            w(f"{ind}}} else {{")
            w(f"{ind}    {target} = try {f.elem}(from: &buffer, version: version)")
            w(f"{ind}}}")
        else:
            w(f"{ind}{target} = try {f.elem}(from: &buffer, version: version)")
    else:
        if f.optional and f.elem in ("string", "bytes", "records"):
            if nullable_cond == "true":
                w(f"{ind}{target} = {read_primitive_expr(f.elem, compact, True)}")
            elif nullable_cond == "false":
                w(f"{ind}{target} = {read_primitive_expr(f.elem, compact, False)}")
            else:
                w(f"{ind}if {nullable_cond} {{")
                w(f"{ind}    {target} = {read_primitive_expr(f.elem, compact, True)}")
                w(f"{ind}}} else {{")
                w(f"{ind}    {target} = {read_primitive_expr(f.elem, compact, False)}")
                w(f"{ind}}}")
        else:
            w(f"{ind}{target} = {read_primitive_expr(f.elem, compact, False)}")


def read_primitive_expr(elem, compact, nullable):
    if elem == "string":
        fn = "readKafkaNullableString" if nullable else "readKafkaString"
        return f"try buffer.{fn}(compact: {compact})"
    if elem in ("bytes", "records"):
        fn = "readKafkaNullableBytes" if nullable else "readKafkaBytes"
        return f"try buffer.{fn}(compact: {compact})"
    return f"try buffer.{READERS[elem]}"


def emit_write_value(f, value, w, ind, flexible, valid, buf="buffer"):
    compact = flex_expr(f, flexible)
    nullable_cond = f.nullable.condition(valid)
    if f.is_array:
        if f.optional:
            w(f"{ind}if let items = {value} {{")
            w(f"{ind}    {buf}.writeKafkaArrayCount(items.count, compact: {compact})")
            w(f"{ind}    for item in items {{")
            emit_write_elem(f, "item", w, ind + "        ", compact, buf)
            w(f"{ind}    }}")
            if nullable_cond == "true":
                w(f"{ind}}} else {{")
                w(f"{ind}    {buf}.writeKafkaNullArray(compact: {compact})")
                w(f"{ind}}}")
            else:
                w(f"{ind}}} else if {nullable_cond} {{")
                w(f"{ind}    {buf}.writeKafkaNullArray(compact: {compact})")
                w(f"{ind}}} else {{")
                w(f"{ind}    {buf}.writeKafkaArrayCount(0, compact: {compact})")
                w(f"{ind}}}")
        else:
            w(f"{ind}{buf}.writeKafkaArrayCount({value}.count, compact: {compact})")
            w(f"{ind}for item in {value} {{")
            emit_write_elem(f, "item", w, ind + "    ", compact, buf)
            w(f"{ind}}}")
    elif f.is_struct:
        if f.optional:
            w(f"{ind}if {nullable_cond} {{")
            w(f"{ind}    if let value = {value} {{")
            w(f"{ind}        {buf}.writeKafkaInt8(1)")
            w(f"{ind}        value.encode(into: &{buf}, version: version)")
            w(f"{ind}    }} else {{")
            w(f"{ind}        {buf}.writeKafkaInt8(-1)")
            w(f"{ind}    }}")
            w(f"{ind}}} else {{")
            w(f"{ind}    ({value} ?? {f.elem}()).encode(into: &{buf}, version: version)")
            w(f"{ind}}}")
        else:
            w(f"{ind}{value}.encode(into: &{buf}, version: version)")
    else:
        if f.optional and f.elem in ("string", "bytes", "records"):
            fn = {"string": "writeKafkaNullableString", "bytes": "writeKafkaNullableBytes"}.get(f.elem, "writeKafkaNullableRecords")
            nn = {"string": "writeKafkaString", "bytes": "writeKafkaBytes"}.get(f.elem, "writeKafkaRecords")
            empty = '""' if f.elem == "string" else "ByteBuffer()"
            if nullable_cond == "true":
                w(f"{ind}{buf}.{fn}({value}, compact: {compact})")
            elif nullable_cond == "false":
                w(f"{ind}{buf}.{nn}({value} ?? {empty}, compact: {compact})")
            else:
                w(f"{ind}if {nullable_cond} {{")
                w(f"{ind}    {buf}.{fn}({value}, compact: {compact})")
                w(f"{ind}}} else {{")
                w(f"{ind}    {buf}.{nn}({value} ?? {empty}, compact: {compact})")
                w(f"{ind}}}")
        else:
            emit_write_prim(f.elem, value, w, ind, compact, buf)


def emit_write_elem(f, value, w, ind, compact, buf):
    if f.is_struct:
        w(f"{ind}{value}.encode(into: &{buf}, version: version)")
    else:
        emit_write_prim(f.elem, value, w, ind, compact, buf)


def emit_write_prim(elem, value, w, ind, compact, buf):
    if elem == "string":
        w(f"{ind}{buf}.writeKafkaString({value}, compact: {compact})")
    elif elem == "bytes":
        w(f"{ind}{buf}.writeKafkaBytes({value}, compact: {compact})")
    elif elem == "records":
        w(f"{ind}{buf}.writeKafkaRecords({value}, compact: {compact})")
    else:
        w(f"{ind}{buf}.{WRITERS[elem]}({value})")


def emit_decoder(s, valid, flexible, w, ind):
    w(f"{ind}/// Decodes this structure at `version`, consuming its bytes from `buffer`.")
    w(f"{ind}public init(from buffer: inout ByteBuffer, version: Int16) throws(KafkaDecodingError) {{")
    body = ind + "    "
    w(f"{body}self.init()")
    uses_flexible = not flexible.empty
    if uses_flexible:
        w(f"{body}let flexible = {Versions(f'{flexible.lo}+').condition(valid)}")
    tagged = []
    for f in s.fields:
        if f.versions.empty:
            continue
        regular = f.versions
        if not f.tagged.empty:
            tagged.append(f)
            # Present as a regular field only in versions where it is not tagged.
            if f.tagged.contains_all(f.versions):
                continue
        cond = regular.condition(valid)
        if not f.tagged.empty:
            cond = f"({cond}) && !({f.tagged.condition(valid)})"
        if cond == "false":
            continue
        if cond == "true":
            emit_read_value(f, f"self.{bare(f.swift_name)}", w, body, flexible, valid)
        else:
            w(f"{body}if {cond} {{")
            emit_read_value(f, f"self.{bare(f.swift_name)}", w, body + "    ", flexible, valid)
            w(f"{body}}}")
    if uses_flexible:
        w(f"{body}if flexible {{")
        w(f"{body}    let tagCount = try buffer.readKafkaUnsignedVarint()")
        w(f"{body}    for _ in 0..<tagCount {{")
        w(f"{body}        let tag = try buffer.readKafkaUnsignedVarint()")
        w(f"{body}        let size = try buffer.readKafkaUnsignedVarint()")
        if tagged:
            w(f"{body}        guard var field = buffer.readSlice(length: Int(size)) else {{")
            w(f"{body}            throw KafkaDecodingError(.truncated, \"tagged field \\(tag)\")")
            w(f"{body}        }}")
            w(f"{body}        switch tag {{")
            for f in sorted(tagged, key=lambda x: x.tag):
                cond = f.tagged.condition(valid)
                where = "" if cond == "true" else f" where {cond}"
                w(f"{body}        case {f.tag}{where}:")
                inner = []
                emit_read_value(f, f"self.{bare(f.swift_name)}", inner.append, body + "            ", flexible, valid)
                for line in inner:
                    w(line.replace("buffer.", "field.").replace("&buffer", "&field"))
            w(f"{body}        default:")
            w(f"{body}            _ = field  // Unknown tags are skipped, as KIP-482 requires.")
            w(f"{body}        }}")
        else:
            w(f"{body}        // Unknown tags are skipped, as KIP-482 requires.")
            w(f"{body}        try buffer.skipKafkaTaggedField(tag: tag, size: size)")
        w(f"{body}    }}")
        w(f"{body}}}")
    w(f"{ind}}}")


def is_default_expr(f, value):
    d = f.swift_default()
    if f.is_array and d == "[]":
        return f"{value}.isEmpty"
    if d == "nil":
        return f"{value} == nil"
    return f"{value} == {d}"


def emit_encoder(s, valid, flexible, w, ind):
    w(f"{ind}/// Encodes this structure at `version` into `buffer`. Fields the version lacks are skipped.")
    w(f"{ind}public func encode(into buffer: inout ByteBuffer, version: Int16) {{")
    body = ind + "    "
    uses_flexible = not flexible.empty
    if uses_flexible:
        w(f"{body}let flexible = {Versions(f'{flexible.lo}+').condition(valid)}")
    tagged = []
    for f in s.fields:
        if f.versions.empty:
            continue
        if not f.tagged.empty:
            tagged.append(f)
            if f.tagged.contains_all(f.versions):
                continue
        cond = f.versions.condition(valid)
        if not f.tagged.empty:
            cond = f"({cond}) && !({f.tagged.condition(valid)})"
        if cond == "false":
            continue
        value = f"self.{bare(f.swift_name)}"
        if cond == "true":
            emit_write_value(f, value, w, body, flexible, valid)
        else:
            w(f"{body}if {cond} {{")
            emit_write_value(f, value, w, body + "    ", flexible, valid)
            w(f"{body}}}")
    if uses_flexible:
        w(f"{body}if flexible {{")
        if tagged:
            tagged = sorted(tagged, key=lambda x: x.tag)
            w(f"{body}    var tagCount: UInt32 = 0")
            for f in tagged:
                cond = f.tagged.condition(valid)
                value = f"self.{bare(f.swift_name)}"
                w(f"{body}    if {cond} && !({is_default_expr(f, value)}) {{ tagCount += 1 }}")
            w(f"{body}    buffer.writeKafkaUnsignedVarint(tagCount)")
            for f in tagged:
                cond = f.tagged.condition(valid)
                value = f"self.{bare(f.swift_name)}"
                w(f"{body}    if {cond} && !({is_default_expr(f, value)}) {{")
                w(f"{body}        var field = ByteBuffer()")
                emit_write_value(f, value, w, body + "        ", flexible, valid, buf="field")
                w(f"{body}        buffer.writeKafkaUnsignedVarint({f.tag})")
                w(f"{body}        buffer.writeKafkaUnsignedVarint(UInt32(field.readableBytes))")
                w(f"{body}        buffer.writeImmutableBuffer(field)")
                w(f"{body}    }}")
        else:
            w(f"{body}    buffer.writeKafkaUnsignedVarint(0)")
        w(f"{body}}}")
    w(f"{ind}}}")


SAMPLE_VALUES = {
    "bool": lambda n: "true",
    "int8": lambda n: f"Int8(truncatingIfNeeded: {n} % 100 + 1)",
    "int16": lambda n: f"Int16(truncatingIfNeeded: {n} % 30000 + 1)",
    "int32": lambda n: f"Int32(truncatingIfNeeded: {n} * 7919 + 1)",
    "int64": lambda n: f"Int64({n}) * 1_000_003 + 5_000_000_000",
    "uint16": lambda n: f"UInt16(truncatingIfNeeded: {n} % 60000 + 1)",
    "uint32": lambda n: f"UInt32(truncatingIfNeeded: {n} * 31 + 1)",
    "float64": lambda n: f"Double({n}) + 0.5",
    "string": lambda n: f'"s\\({n})-é"',
    "bytes": lambda n: f"ByteBuffer(bytes: [UInt8(truncatingIfNeeded: {n}), 1, 2, 3])",
    "records": lambda n: f"ByteBuffer(bytes: [UInt8(truncatingIfNeeded: {n}), 9, 8, 7, 6])",
    "uuid": lambda n: f"KafkaUUID(high: UInt64({n} + 1), low: UInt64({n} * 3 + 7))",
}


def gen_samples(schema, out):
    """Emits `sample(version:)`: a value with every field the version carries set to a
    non-default value (arrays with two elements), for round-trip tests of every version."""
    name = schema["name"]
    valid = Versions(schema["validVersions"])
    registry = {}
    for common in schema.get("commonStructs", []):
        Struct(common["name"], common["fields"], Versions(common.get("versions", "0+")), registry)
    top = Struct(name, schema["fields"], valid, registry)
    w = out.append
    w(f"extension {name} {{")
    for sname, st in registry.items():
        qualified = name if st is top else f"{name}.{sname}"
        w(f"    static func sample{'' if st is top else sname}(version: Int16, seed: Int) -> {qualified} {{")
        w(f"        var value = {qualified}()")
        for i, f in enumerate(st.fields):
            if f.versions.empty:
                continue
            cond = f.versions.condition(valid)
            n = f"seed + {i}"
            if f.is_struct:
                maker = f"{name}.sample{f.elem}(version: version, seed: {n})" if f.elem in registry else None
                if maker is None:
                    continue
                expr = f"[{maker}, {name}.sample{f.elem}(version: version, seed: {n} + 100)]" if f.is_array else maker
            else:
                base = SAMPLE_VALUES[f.elem]
                expr = f"[{base('(' + n + ')')}, {base('(' + n + ' + 1)')}]" if f.is_array else base(f"({n})")
            if cond == "true":
                w(f"        value.{bare(f.swift_name)} = {expr}")
            else:
                w(f"        if {cond} {{ value.{bare(f.swift_name)} = {expr} }}")
        w("        return value")
        w("    }")
    w("}")
    w("")


def gen_api_keys(schemas, out):
    w = out.append
    w("// Generated by tools/gen-protocol.py from Kafka's message schemas. Do not edit.")
    w("")
    w("extension KafkaAPIKey {")
    seen = {}
    for s in schemas:
        if s.get("type") == "request" and "apiKey" in s:
            seen[s["apiKey"]] = s["name"][: -len("Request")]
    for key in sorted(seen):
        w(f"    /// Kafka API key {key}, `{seen[key]}`.")
        w(f"    public static let {lower_camel(seen[key])} = KafkaAPIKey(rawValue: {key})")
    w("")
    w("    /// The first flexible request version of every API key (KIP-482); absent: never flexible.")
    w("    public static let firstFlexibleRequestVersions: [Int16: Int16] = [")
    for s_ in sorted((x for x in schemas if x.get("type") == "request" and "apiKey" in x), key=lambda x: x["apiKey"]):
        flexible = Versions(s_.get("flexibleVersions", "none"))
        if not flexible.empty:
            w(f"        {s_['apiKey']}: {flexible.lo},")
    w("    ]")
    w("")
    w("    /// Kafka's name for every API key, for logs.")
    w("    public static let names: [Int16: String] = [")
    for key in sorted(seen):
        w(f'        {key}: "{seen[key]}",')
    w("    ]")
    w("}")
    w("")


def gen_error_codes(tsv, out):
    w = out.append
    w("// Generated by tools/gen-protocol.py from Kafka's error-codes.tsv. Do not edit.")
    w("")
    w("extension KafkaErrorCode {")
    rows = []
    with open(tsv) as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            code, name = int(parts[0]), parts[1]
            msg = parts[2] if len(parts) > 2 else ""
            rows.append((code, name, msg))
    for code, name, msg in rows:
        ident = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name.lower())
        ident = f"`{ident}`" if ident in SWIFT_KEYWORDS else ident
        doc = msg.replace("\\", "\\\\") or name
        w(f"    /// {code} `{name}`: {doc}")
        w(f"    public static let {ident} = KafkaErrorCode(rawValue: {code})")
    w("")
    w("    /// Kafka's name and message for every code.")
    w("    public static let descriptions: [Int16: (name: String, message: String)] = [")
    for code, name, msg in rows:
        w(f"        {code}: ({json.dumps(name)}, {json.dumps(msg)}),")
    w("    ]")
    w("}")
    w("")


def main():
    schema_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "kafka-protocol", "message")
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".swift"):
            os.remove(os.path.join(OUT, old))
    all_schemas = []
    for fn in sorted(os.listdir(schema_dir)):
        if fn.endswith(".json"):
            all_schemas.append(load_schema(os.path.join(schema_dir, fn)))
    names = [f"{a}Request" for a in APIS] + [f"{a}Response" for a in APIS] + EXTRA
    by_name = {s["name"]: s for s in all_schemas}
    for name in names:
        out = []
        gen_message(by_name[name], out)
        with open(os.path.join(OUT, f"{name}.swift"), "w") as f:
            f.write("\n".join(out))
    out = []
    gen_api_keys(all_schemas, out)
    with open(os.path.join(OUT, "KafkaAPIKey+Generated.swift"), "w") as f:
        f.write("\n".join(out))
    out = []
    gen_error_codes(os.path.join(schema_dir, "..", "error-codes.tsv"), out)
    with open(os.path.join(OUT, "KafkaErrorCode+Generated.swift"), "w") as f:
        f.write("\n".join(out))
    samples = ["// Generated by tools/gen-protocol.py. Do not edit.", "", "import KafkaProtocol", "import NIOCore", ""]
    for name in names:
        gen_samples(by_name[name], samples)
    samples.append("/// Every generated message type, for tests that cover them all.")
    samples.append("let allMessageSamples: [(name: String, versions: ClosedRange<Int16>, roundTrip: @Sendable (Int16) throws -> Bool)] = [")
    for name in names:
        samples.append(f'    ("{name}", {name}.schemaVersions, {{ version in')
        samples.append(f"        let value = {name}.sample(version: version, seed: Int(version) * 10)")
        samples.append("        var buffer = ByteBuffer()")
        samples.append("        value.encode(into: &buffer, version: version)")
        samples.append(f"        return try {name}.decodeWhole(buffer, version: version) == value")
        samples.append("    }),")
    samples.append("]")
    samples.append("")
    test_out = os.path.join(ROOT, "Tests", "KafkaProtocolTests", "Generated")
    os.makedirs(test_out, exist_ok=True)
    with open(os.path.join(test_out, "MessageSamples.swift"), "w") as f:
        f.write("\n".join(samples))
    print(f"wrote {len(names) + 2} files to {os.path.relpath(OUT, ROOT)} and message samples for tests")


if __name__ == "__main__":
    main()
