#!/usr/bin/env python3
"""A producer and consumer following a partition leader that crashes
mid-stream (tests/server.rs runs it), with librdkafka (confluent-kafka, the
default) or kafka-python.

    python leader_failover.py BOOTSTRAP TOPIC [confluent-kafka|kafka-python]

Produces 500 keyed records (idempotent, acks=all), prints `half` and waits
for a line on stdin (the test crashes a leader broker meanwhile), produces
500 more, then reads the whole topic back and checks that every
acknowledged record is there exactly once and each key's records are in
order. Prints `ok`; exits 1 with the failed check on stderr otherwise.
"""

import sys
import time

RECORDS = 1000
KEYS = 10
DEADLINE_S = 120


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def produce(producer, indices, errors):
    for i in indices:
        producer.produce(TOPIC, key=f"k{i % KEYS}", value=f"{i}",
                         on_delivery=lambda err, msg: err and errors.append(err))
        producer.poll(0)
    left = producer.flush(DEADLINE_S)
    if left or errors:
        fail(f"records not acknowledged: {left} left, errors {errors[:3]}")


def check(seen):
    values = sorted(v for vs in seen.values() for v in vs)
    if values != list(range(RECORDS)):
        fail(f"each record once: {len(values)} read, {len(set(values))} distinct")
    for key, vs in seen.items():
        if vs != sorted(vs):
            fail(f"records of key {key} out of order")
    print("ok", flush=True)


def main_kafka_python(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTp

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        delivery_timeout_ms=DEADLINE_S * 1000,
    )

    def produce_kp(indices):
        futures = [
            producer.send(TOPIC, key=f"k{i % KEYS}".encode(), value=f"{i}".encode())
            for i in indices
        ]
        producer.flush(DEADLINE_S)
        for f in futures:
            try:
                f.get(timeout=DEADLINE_S)
            except Exception as e:  # noqa: BLE001 - any failure fails the check
                fail(f"record not acknowledged: {e!r}")

    produce_kp(range(RECORDS // 2))
    print("half", flush=True)
    sys.stdin.readline()
    produce_kp(range(RECORDS // 2, RECORDS))
    producer.close(DEADLINE_S)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
    )
    partitions = sorted(consumer.partitions_for_topic(TOPIC) or [])
    if not partitions:
        fail("no partitions in the metadata")
    tps = [KTp(TOPIC, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = {}
    deadline = time.monotonic() + DEADLINE_S
    while sum(len(v) for v in seen.values()) < RECORDS:
        if time.monotonic() > deadline:
            fail(f"read {sum(len(v) for v in seen.values())} of {RECORDS} records")
        for records in consumer.poll(timeout_ms=200).values():
            for m in records:
                seen.setdefault(m.key, []).append(int(m.value))
    consumer.close()
    check(seen)


def main():
    global TOPIC
    bootstrap, TOPIC = sys.argv[1], sys.argv[2]
    client = sys.argv[3] if len(sys.argv) > 3 else "confluent-kafka"
    if client == "kafka-python":
        main_kafka_python(bootstrap)
        return
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": DEADLINE_S * 1000,
    })
    errors = []
    produce(producer, range(RECORDS // 2), errors)
    print("half", flush=True)
    sys.stdin.readline()
    produce(producer, range(RECORDS // 2, RECORDS), errors)

    meta = producer.list_topics(TOPIC, timeout=DEADLINE_S)
    partitions = sorted(meta.topics[TOPIC].partitions)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "leader-failover-reader",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
    seen = {}
    deadline = time.monotonic() + DEADLINE_S
    while sum(len(v) for v in seen.values()) < RECORDS:
        if time.monotonic() > deadline:
            fail(f"read {sum(len(v) for v in seen.values())} of {RECORDS} records")
        m = consumer.poll(0.2)
        if m is None or m.error() is not None:
            continue
        seen.setdefault(m.key(), []).append(int(m.value()))
    consumer.close()
    check(seen)


if __name__ == "__main__":
    main()
