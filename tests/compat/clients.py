"""A real Kafka client against logbus's listener (tests/server.rs runs it).

    python clients.py CLIENT BOOTSTRAP TOPIC PARTITIONS

CLIENT is `kafka-python` or `confluent-kafka` (librdkafka). The script
produces keyed records with every compression codec (gzip, snappy, lz4,
zstd; acks=all), then consumes the topic back from the beginning by assigned
partitions (no consumer group) and checks that every record came back once,
with its key and value, each key in one partition. It prints one line per
codec, `produced CODEC N`, then `consumed N`, and exits non-zero on any
mismatch.
"""

import sys
import time

CODECS = ["gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 200
DEADLINE_S = 60


def records():
    for codec in CODECS:
        for i in range(PER_CODEC):
            key = f"{codec}-key-{i % 17}".encode()
            value = f"{codec}-value-{i}".encode() * (1 + i % 5)
            yield codec, key, value


def with_kafka_python(bootstrap, topic, partitions):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    for codec in CODECS:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=codec,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
        )
        futures = [
            producer.send(topic, key=k, value=v) for c, k, v in records() if c == codec
        ]
        producer.flush()
        for f in futures:
            f.get(timeout=30)
        producer.close()
        print(f"produced {codec} {len(futures)}", flush=True)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < len(CODECS) * PER_CODEC and time.time() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            got.extend((tp.partition, m.key, m.value) for m in msgs)
    consumer.close()
    return got


def with_confluent_kafka(bootstrap, topic, partitions):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    for codec in CODECS:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": codec,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        errors = []

        def delivered(err, _msg):
            if err is not None:
                errors.append(err)

        n = 0
        for c, k, v in records():
            if c == codec:
                producer.produce(topic, key=k, value=v, on_delivery=delivered)
                n += 1
        left = producer.flush(30)
        if left or errors:
            raise SystemExit(f"{codec}: {left} undelivered, errors {errors[:3]}")
        print(f"produced {codec} {n}", flush=True)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Required by librdkafka even without a group's subscription;
            # nothing is committed.
            "group.id": "logbus-compat",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < len(CODECS) * PER_CODEC and time.time() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error():
                raise SystemExit(f"consume error: {m.error()}")
            got.append((m.partition(), m.key(), m.value()))
    consumer.close()
    return got


def main():
    client, bootstrap, topic, partitions = sys.argv[1:5]
    partitions = int(partitions)
    run = {"kafka-python": with_kafka_python, "confluent-kafka": with_confluent_kafka}[client]
    got = run(bootstrap, topic, partitions)
    print(f"consumed {len(got)}", flush=True)
    expected = sorted((k, v) for _, k, v in records())
    if sorted((k, v) for _, k, v in got) != expected:
        raise SystemExit(f"records differ: got {len(got)}, expected {len(expected)}")
    partition_of = {}
    for p, k, _ in got:
        if partition_of.setdefault(k, p) != p:
            raise SystemExit(f"key {k!r} in partitions {partition_of[k]} and {p}")
    print("ok", flush=True)


if __name__ == "__main__":
    main()
