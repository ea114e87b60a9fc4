#!/usr/bin/env python3
"""Writes the kafka-python fixtures under tests/fixtures/kafka-python/.

    /path/to/python-with-kafka-python tests/compat/make_fixtures.py

One file of concatenated v2 batches per codec kafka-python can write
(<codec>.bin), built with kafka-python's MemoryRecordsBuilder, plus
expected.json (for humans) and expected.txt (the line format of
read_segments.py --text, which tests/format_compat.rs parses). Both
expectations come from reading the files back with kafka-python and are
checked here against the records that were appended.

Edits made after kafka-python's builder, all of them what a broker does:
- baseOffset of each batch is set so offsets run on from 0 across a file
  (the producer builder always writes 0; not covered by the CRC);
- log-append-time.bin holds batches whose timestamp type is switched to
  LogAppendTime with maxTimestamp set to the append time and the CRC
  recomputed with kafka-python's calc_crc32c (kafka-python's builder only
  writes CreateTime: the broker stamps LogAppendTime).
"""

import json
import os
import struct
import sys

import kafka
import kafka.codec
from kafka.record.default_records import DefaultRecordBatch as DRB
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import read_segments  # noqa: E402

OUT = os.path.join(HERE, "..", "fixtures", "kafka-python")

CODECS = [("none", DRB.CODEC_NONE), ("gzip", DRB.CODEC_GZIP),
          ("snappy", DRB.CODEC_SNAPPY), ("lz4", DRB.CODEC_LZ4),
          ("zstd", DRB.CODEC_ZSTD)]

T0 = 1_700_000_000_000
# Compressible filler so that kafka-python keeps the codec (its builder
# falls back to no compression when compressing does not shrink the data).
FILL = b"logbus " * 8


def batches_spec():
    """(producer kwargs, [(timestamp, key, value, headers)]) per batch."""
    return [
        ({}, [
            (T0, b"key-0", FILL + b"0", []),
            (T0 - 5, None, FILL + b"1", [("h", b"x")]),  # negative delta
            (T0 + 1000, b"key-2", None, []),  # tombstone
            (T0 + 7, b"", b"", [("empty", b""), ("null", None)]),
            (T0 - 100_000, None, None, [("k\u00e9y", b"\x00\xff")]),
        ]),
        (dict(producer_id=4242, producer_epoch=3, base_sequence=17), [
            (T0 + 50, b"idem", FILL + b"a", [("a", b"1"), ("b", None), ("a", b"2")]),
            (T0 + 40, b"idem", FILL + b"b", []),
            (T0 + 10_000_000, b"idem", FILL + b"c", []),  # 3-byte delta
        ]),
        (dict(producer_id=99, producer_epoch=0, base_sequence=0, transactional=True), [
            (1, b"txn", FILL + b"t", [("trace", b"abc" * 10)]),
            (0, None, FILL, []),
        ]),
        ({}, [(T0 + 3, b"single", FILL, [])]),
        # Wider varints: a 2-byte key length and header count, a 6-byte
        # negative and a 6-byte positive timestamp delta.
        ({}, [
            (T0, b"K" * 70, None, [("h%d" % i, b"") for i in range(70)]),
            (0, None, b"epoch", []),
            (T0 + 2**40, None, FILL, []),
        ]),
    ]


def build(codec, set_log_append_time=None):
    out = bytearray()
    next_offset = 0
    for producer, records in batches_spec():
        b = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 20, **producer)
        for ts, k, v, h in records:
            assert b.append(ts, k, v, h) is not None
        b.close()
        buf = bytearray(b.buffer())
        assert buf[21 + 1] & 0x07 == codec, "kafka-python did not compress"
        struct.pack_into(">q", buf, 0, next_offset)
        if set_log_append_time is not None:
            (attrs,) = struct.unpack_from(">h", buf, 21)
            struct.pack_into(">h", buf, 21, attrs | DRB.TIMESTAMP_TYPE_MASK)
            struct.pack_into(">q", buf, 35, set_log_append_time)
            struct.pack_into(">I", buf, 17, calc_crc32c(memoryview(buf)[21:]))
        next_offset += len(records)
        out += buf
    return bytes(out)


def check(batches, codec, log_append_time=None):
    """The records read back are the records appended."""
    spec = batches_spec()
    assert len(batches) == len(spec)
    offset = 0
    for got, (producer, records) in zip(batches, spec):
        assert got["base_offset"] == offset
        assert got["compression_type"] == codec
        assert got["timestamp_type"] == (0 if log_append_time is None else 1)
        assert got["producer_id"] == producer.get("producer_id", -1)
        assert got["producer_epoch"] == producer.get("producer_epoch", -1)
        assert got["base_sequence"] == producer.get("base_sequence", -1)
        assert got["is_transactional"] == producer.get("transactional", False)
        assert got["last_offset_delta"] == len(records) - 1
        want_max = max(r[0] for r in records) if log_append_time is None else log_append_time
        assert got["max_timestamp"] == want_max
        for r, (ts, k, v, h) in zip(got["records"], records):
            assert r["offset"] == offset
            assert r["timestamp"] == (ts if log_append_time is None else log_append_time)
            assert r["key"] == (None if k is None else k.hex())
            assert r["value"] == (None if v is None else v.hex())
            assert r["headers"] == [[hk, None if hv is None else hv.hex()] for hk, hv in h]
            offset += 1
        assert len(got["records"]) == len(records)


def main():
    os.makedirs(OUT, exist_ok=True)
    files = []
    for name, codec in CODECS:
        if codec != DRB.CODEC_NONE and not getattr(kafka.codec, "has_" + name)():
            print("skipping %s: kafka-python has no library for it" % name)
            continue
        files.append(("%s.bin" % name, build(codec), codec, None))
    lat = T0 + 123_456
    files.append(("log-append-time.bin", build(DRB.CODEC_LZ4, lat), DRB.CODEC_LZ4, lat))

    all_batches = []
    for fname, data, codec, lat in files:
        path = os.path.join(OUT, fname)
        with open(path, "wb") as f:
            f.write(data)
        batches = read_segments.describe_file(path)
        check(batches, codec, lat)
        all_batches.extend(batches)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        # One batch per line keeps the file small and diffable.
        head = json.dumps({"kafka_python_version": kafka.__version__,
                           "generated_by": "tests/compat/make_fixtures.py"})
        f.write(head[:-1] + ', "batches": [\n')
        f.write(",\n".join(json.dumps(b) for b in all_batches))
        f.write("\n]}\n")
    with open(os.path.join(OUT, "expected.txt"), "w") as f:
        f.write("# kafka-python %s; tests/compat/make_fixtures.py; format: "
                "tests/compat/read_segments.py --text\n" % kafka.__version__)
        for line in read_segments.text_lines(all_batches):
            f.write(line + "\n")
    print("wrote %d files with kafka-python %s" % (len(files), kafka.__version__))


if __name__ == "__main__":
    main()
