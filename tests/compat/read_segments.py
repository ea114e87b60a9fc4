#!/usr/bin/env python3
"""Reads Kafka v2 record batches with kafka-python, an implementation
independent of logbus, and prints what it decoded.

    read_segments.py DIR          every DIR/*.log (sorted by name), JSON
    read_segments.py --text DIR   the same, in the line format below
    read_segments.py [--text] FILE...   the named files instead

Every batch's CRC-32C is checked with kafka-python's
DefaultRecordBatch.validate_crc() before its records are read. Any CRC
failure, legacy (magic 0/1) batch, parse error or trailing partial batch
is reported on stderr with a non-zero exit status.

JSON: a list of batches, each
    {"file", "base_offset", "last_offset_delta", "partition_leader_epoch",
     "crc", "compression_type", "timestamp_type", "first_timestamp",
     "max_timestamp", "producer_id", "producer_epoch", "base_sequence",
     "is_transactional", "is_control", "records_count",
     "records": [{"offset", "timestamp", "key", "value",
                  "headers": [[key, value], ...]}]}
with keys, values and header values as lowercase hex strings or null.

Text (--text): one line per file, batch and record, fields tab-separated,
bytes as lowercase hex, null as "-" (an empty byte string is an empty field):
    file    NAME
    batch   BASE_OFFSET LAST_OFFSET_DELTA PARTITION_LEADER_EPOCH CRC
            COMPRESSION_TYPE TIMESTAMP_TYPE FIRST_TIMESTAMP MAX_TIMESTAMP
            PRODUCER_ID PRODUCER_EPOCH BASE_SEQUENCE IS_TRANSACTIONAL
            IS_CONTROL RECORDS_COUNT
    record  OFFSET TIMESTAMP KEY VALUE HEADERS
COMPRESSION_TYPE is the codec id (0 none .. 4 zstd), TIMESTAMP_TYPE 0
CreateTime / 1 LogAppendTime, flags 0/1. HEADERS is a comma-separated list
of KEYHEX:VALUEHEX (VALUEHEX "-" for a null value), empty without headers.
tests/format_compat.rs parses this format.
"""

import json
import os
import sys

from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecords


class CompatError(Exception):
    pass


def _hex(b):
    return None if b is None else bytes(b).hex()


def describe_file(path):
    """Returns the batches of one file as dicts (the JSON shape)."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    records = MemoryRecords(data)
    out = []
    while records.has_next():
        batch = records.next_batch()
        if not isinstance(batch, DefaultRecordBatch):
            raise CompatError("%s: batch #%d is not magic 2 (magic %d)"
                              % (name, len(out), batch.magic))
        where = "%s: batch #%d (base offset %d)" % (name, len(out), batch.base_offset)
        if not batch.validate_crc():
            raise CompatError("%s: CRC mismatch (stored %#010x)" % (where, batch.crc))
        d = {
            "file": name,
            "base_offset": batch.base_offset,
            "last_offset_delta": batch.last_offset_delta,
            "partition_leader_epoch": batch.leader_epoch,
            "crc": batch.crc,
            "compression_type": batch.compression_type,
            "timestamp_type": batch.timestamp_type,
            "first_timestamp": batch.first_timestamp,
            "max_timestamp": batch.max_timestamp,
            "producer_id": batch.producer_id,
            "producer_epoch": batch.producer_epoch,
            "base_sequence": batch.base_sequence,
            "is_transactional": batch.is_transactional,
            "is_control": batch.is_control_batch,
            "records_count": batch.records_count,
            "records": [],
        }
        try:
            for r in batch:
                d["records"].append({
                    "offset": r.offset,
                    "timestamp": r.timestamp,
                    "key": _hex(r.key),
                    "value": _hex(r.value),
                    "headers": [[k, _hex(v)] for k, v in r.headers],
                })
        except Exception as e:  # kafka-python raises several types here
            raise CompatError("%s: %s: %s" % (where, type(e).__name__, e)) from e
        if len(d["records"]) != batch.records_count:
            raise CompatError("%s: read %d records, header says %d"
                              % (where, len(d["records"]), batch.records_count))
        out.append(d)
    # MemoryRecords silently stops at a partial batch; a segment has none.
    if records.valid_bytes() != len(data):
        raise CompatError("%s: %d trailing bytes are not a whole batch"
                          % (name, len(data) - records.valid_bytes()))
    return out


def describe_paths(paths):
    batches = []
    for p in paths:
        batches.extend(describe_file(p))
    return batches


def _n(x):
    return "-" if x is None else x


def text_lines(batches):
    """The --text format of describe_paths' result."""
    lines = []
    current = None
    for b in batches:
        if b["file"] != current:
            current = b["file"]
            lines.append("file\t%s" % current)
        fields = [b[k] for k in (
            "base_offset", "last_offset_delta", "partition_leader_epoch", "crc",
            "compression_type", "timestamp_type", "first_timestamp",
            "max_timestamp", "producer_id", "producer_epoch", "base_sequence")]
        fields += [int(b["is_transactional"]), int(b["is_control"]), b["records_count"]]
        lines.append("\t".join(["batch"] + [str(f) for f in fields]))
        for r in b["records"]:
            headers = ",".join("%s:%s" % (k.encode("utf-8").hex(), _n(v))
                               for k, v in r["headers"])
            lines.append("\t".join(["record", str(r["offset"]), str(r["timestamp"]),
                                    _n(r["key"]), _n(r["value"]), headers]))
    return lines


def main(argv):
    text = False
    args = argv[1:]
    if args and args[0] == "--text":
        text = True
        args = args[1:]
    if not args:
        sys.stderr.write("usage: read_segments.py [--text] DIR | FILE...\n")
        return 2
    if len(args) == 1 and os.path.isdir(args[0]):
        paths = sorted(os.path.join(args[0], n) for n in os.listdir(args[0])
                       if n.endswith(".log"))
        if not paths:
            sys.stderr.write("read_segments.py: no *.log files in %s\n" % args[0])
            return 1
    else:
        paths = args
    try:
        batches = describe_paths(paths)
    except Exception as e:
        sys.stderr.write("read_segments.py: %s: %s\n" % (type(e).__name__, e))
        return 1
    if text:
        sys.stdout.write("".join(line + "\n" for line in text_lines(batches)))
    else:
        json.dump(batches, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
