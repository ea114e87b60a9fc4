"""A real Kafka client over SASL and TLS against logbus's listener
(tests/server_security.rs runs it).

    python security.py CLIENT BOOTSTRAP TOPIC PROTOCOL [--ca FILE] [--user U --password P]

CLIENT is `kafka-python` or `confluent-kafka` (librdkafka); PROTOCOL is the
client's `security.protocol`: SASL_PLAINTEXT, SSL or SASL_SSL. With SASL the
mechanism is PLAIN with the user and password given; with TLS the server's
certificate must be signed by the CA in --ca (the host name is checked). The
script produces 100 keyed records (acks=all), consumes the topic back from
the beginning by assigned partitions and checks every record came back once.
With SASL it first checks that a wrong password is refused. It prints
`produced N`, `consumed N`, then `ok`, and exits non-zero on any mismatch.
"""

import argparse
import logging
import time

RECORDS = 100
DEADLINE_S = 60
# The broker's SaslAuthenticate error message for a wrong password.
REFUSED = "Authentication failed: Invalid username or password"


class Seen(logging.Handler):
    """Keeps the messages logged through it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def records():
    for i in range(RECORDS):
        yield f"key-{i % 7}".encode(), f"secure-value-{i}".encode()


def kafka_python_security(args, password):
    conf = {"security_protocol": args.protocol}
    if "SASL" in args.protocol:
        conf.update(
            sasl_mechanism="PLAIN",
            sasl_plain_username=args.user,
            sasl_plain_password=password,
        )
    if "SSL" in args.protocol:
        conf.update(ssl_cafile=args.ca, ssl_check_hostname=True)
    return conf


def with_kafka_python(args):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    if "SASL" in args.protocol:
        # kafka-python logs the broker's SaslAuthenticate error message.
        seen = Seen()
        logging.getLogger("kafka").addHandler(seen)
        try:
            bad = KafkaProducer(
                bootstrap_servers=args.bootstrap,
                bootstrap_timeout_ms=5000,
                request_timeout_ms=5000,
                max_block_ms=5000,
                **kafka_python_security(args, "not-the-password"),
            )
            bad.send(args.topic, b"never").get(timeout=10)
            raise SystemExit("a wrong password was accepted")
        except KafkaError as e:
            print(f"wrong password refused: {type(e).__name__}", flush=True)
        logging.getLogger("kafka").removeHandler(seen)
        if not any(REFUSED in m for m in seen.messages):
            raise SystemExit(f"no SASL_AUTHENTICATION_FAILED logged: {seen.messages[:5]}")
        print(f"kafka-python logged: {REFUSED}", flush=True)

    security = kafka_python_security(args, args.password)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", **security)
    futures = [producer.send(args.topic, key=k, value=v) for k, v in records()]
    producer.flush()
    for f in futures:
        f.get(timeout=30)
    producer.close()
    print(f"produced {len(futures)}", flush=True)

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **security,
    )
    partitions = consumer.partitions_for_topic(args.topic)
    consumer.assign([TopicPartition(args.topic, p) for p in partitions])
    consumer.seek_to_beginning()
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < RECORDS and time.time() < deadline:
        for _tp, msgs in consumer.poll(timeout_ms=500).items():
            got.extend((m.key, m.value) for m in msgs)
    consumer.close()
    return got


def confluent_security(args, password):
    conf = {"security.protocol": args.protocol}
    if "SASL" in args.protocol:
        conf.update(
            {
                "sasl.mechanisms": "PLAIN",
                "sasl.username": args.user,
                "sasl.password": password,
            }
        )
    if "SSL" in args.protocol:
        conf.update(
            {"ssl.ca.location": args.ca, "ssl.endpoint.identification.algorithm": "https"}
        )
    return conf


def with_confluent_kafka(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
    from confluent_kafka import TopicPartition

    if "SASL" in args.protocol:
        errors = []
        bad = Producer(
            {
                "bootstrap.servers": args.bootstrap,
                "error_cb": errors.append,
                **confluent_security(args, "not-the-password"),
            }
        )
        try:
            bad.list_topics(timeout=5)
            raise SystemExit("a wrong password was accepted")
        except KafkaException as e:
            print(f"wrong password refused: {e.args[0].name()}", flush=True)
        # The error callback, served by poll(), has the broker's message.
        bad.poll(0)
        if not any(REFUSED in e.str() for e in errors):
            raise SystemExit(f"no SASL_AUTHENTICATION_FAILED reported: {errors[:3]}")
        print(f"librdkafka reported: {REFUSED}", flush=True)

    security = confluent_security(args, args.password)
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", **security})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    for k, v in records():
        producer.produce(args.topic, key=k, value=v, on_delivery=delivered)
    left = producer.flush(30)
    if left or failures:
        raise SystemExit(f"{left} undelivered, errors {failures[:3]}")
    print(f"produced {RECORDS}", flush=True)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            # Required by librdkafka even without a subscription; nothing
            # is committed.
            "group.id": "logbus-security",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **security,
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=30)
    partitions = sorted(metadata.topics[args.topic].partitions)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < RECORDS and time.time() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error():
                raise SystemExit(f"consume error: {m.error()}")
            got.append((m.key(), m.value()))
    consumer.close()
    return got


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=["kafka-python", "confluent-kafka"])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("protocol", choices=["SASL_PLAINTEXT", "SSL", "SASL_SSL"])
    parser.add_argument("--ca")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    run = {"kafka-python": with_kafka_python, "confluent-kafka": with_confluent_kafka}
    got = run[args.client](args)
    print(f"consumed {len(got)}", flush=True)
    if sorted(got) != sorted(records()):
        raise SystemExit(f"records differ: got {len(got)}, expected {RECORDS}")
    print("ok", flush=True)


if __name__ == "__main__":
    main()
