#!/usr/bin/env python3
"""Drives logbus's group coordinator over Kafka's wire protocol with
kafka-python (3.0), a client nobody here wrote.

    /path/to/python-with-kafka-python tests/compat/group_client.py HOST:PORT [TOPIC]

Needs a running logbus listener (`logbus serve`) at HOST:PORT with TOPIC
(default `compat-groups`) already created with 4 partitions. Exits 0 when
every check passes, 1 with the failed check on stderr otherwise.

What it checks, in order:
 1. 40 keyed records produced (acks=all) land in the topic.
 2. Two consumers of one group split the 4 partitions between them
    (JoinGroup/SyncGroup parked until both are in, the leader's
    assignment delivered to each) and together read all 40 records.
 3. Each commits what it read; OffsetFetch (consumer.committed and the
    admin client's list_consumer_group_offsets) returns the offsets.
 4. The admin client lists the group and describes it Stable with two
    members and protocol `range`.
 5. A third consumer joins: the group rebalances and all three own
    partitions; every partition is owned once.
 6. All three close (LeaveGroup): a fresh consumer resumes from the
    committed offsets and reads nothing new.
 7. The group is deleted (DeleteGroups) once empty.
 8. If kafka-python has transactions (KIP-98, 2.1+): a transactional
    producer's committed records are read by a read_committed consumer,
    its aborted ones are not, and send_offsets_to_transaction commits the
    group's offsets with the transaction.

Every wait is bounded by a real-time deadline; nothing here sleeps to wait
for the broker beyond kafka-python's own poll timeouts.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

GROUP = "compat-group"
RECORDS = 40
PARTITIONS = 4
DEADLINE_S = 60


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def consumer(bootstrap, topic, **extra):
    config = dict(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        client_id="group-client",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=30_000,
    )
    config.update(extra)
    c = KafkaConsumer(**config)
    c.subscribe([topic])
    return c


def poll_until(consumers, done, what):
    """Polls every consumer in turn until done(records) holds."""
    records = {id(c): [] for c in consumers}
    deadline = time.monotonic() + DEADLINE_S
    while not done(records):
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        for c in consumers:
            for batch in c.poll(timeout_ms=200).values():
                records[id(c)].extend(batch)
    return records


def produce(bootstrap, topic):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(RECORDS):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    bootstrap = sys.argv[1]
    topic = sys.argv[2] if len(sys.argv) > 2 else "compat-groups"
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    # 1.
    produce(bootstrap, topic)

    # 2. Two members split the partitions and read everything.
    a, b = consumer(bootstrap, topic), consumer(bootstrap, topic)
    read = poll_until(
        [a, b],
        lambda r: sum(len(v) for v in r.values()) >= RECORDS
        and a.assignment() and b.assignment(),
        "two consumers to read every record",
    )
    owned_a, owned_b = set(a.assignment()), set(b.assignment())
    check(owned_a and owned_b, f"both own partitions: {owned_a} {owned_b}")
    check(not (owned_a & owned_b), f"no partition owned twice: {owned_a & owned_b}")
    check(owned_a | owned_b == set(partitions), "every partition is owned")
    values = sorted(r.value for v in read.values() for r in v)
    check(values == sorted(f"v{i}".encode() for i in range(RECORDS)),
          f"every record read once: {len(values)}")

    # 3. Commits come back.
    for c in (a, b):
        c.commit()
    for tp in partitions:
        owner = a if tp in owned_a else b
        check(owner.committed(tp) == owner.position(tp),
              f"{tp}: committed {owner.committed(tp)} != position {owner.position(tp)}")

    # 4. The admin view.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="group-admin")
    listed = [g[0] if isinstance(g, tuple) else g.group for g in admin.list_consumer_groups()]
    check(GROUP in listed, f"{GROUP} listed: {listed}")
    offsets = admin.list_consumer_group_offsets(GROUP)
    check(sum(o.offset for o in offsets.values()) == RECORDS,
          f"committed offsets add up to {RECORDS}: {offsets}")
    described = admin.describe_consumer_groups([GROUP])[0]
    check(described.state == "Stable", f"Stable: {described.state}")
    check(len(described.members) == 2, f"two members: {described.members}")
    check(described.protocol == "range", f"range: {described.protocol}")

    # 5. A third member rebalances the group.
    c = consumer(bootstrap, topic)
    poll_until(
        [a, b, c],
        lambda r: all(x.assignment() for x in (a, b, c))
        and sum(len(x.assignment()) for x in (a, b, c)) == PARTITIONS,
        "three consumers to share the partitions",
    )
    owned = [tp for x in (a, b, c) for tp in x.assignment()]
    check(sorted(owned) == sorted(partitions), f"each partition owned once: {owned}")

    # 6. Leave, then resume from the commits.
    for x in (a, b, c):
        x.close()
    fresh = consumer(bootstrap, topic)
    poll_until([fresh], lambda r: len(fresh.assignment()) == PARTITIONS, "a lone consumer")
    for tp in partitions:
        check(fresh.position(tp) == fresh.committed(tp), f"{tp} resumes at its commit")
    extra = fresh.poll(timeout_ms=1_000)
    check(not any(extra.values()), f"nothing new: {extra}")
    fresh.close()

    # 7. Delete the empty group.
    deleted = admin.delete_consumer_groups([GROUP])
    check(all(error is None or getattr(error, "errno", 0) == 0 for _, error in deleted),
          f"group deleted: {deleted}")

    # 8. Transactions, where kafka-python has them.
    if hasattr(KafkaProducer, "init_transactions"):
        transactions(bootstrap, topic, partitions)
    admin.close()
    print("ok")


def transactions(bootstrap, topic, partitions):
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="compat-tx")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, key=b"tx", value=b"aborted", partition=0)
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, key=b"tx", value=b"committed", partition=0)
    producer.send_offsets_to_transaction(
        {TopicPartition(topic, 0): _offset_and_metadata(7)}, GROUP + "-tx")
    producer.commit_transaction()
    producer.close()

    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                           isolation_level="read_committed",
                           auto_offset_reset="earliest", enable_auto_commit=False)
    reader.assign([TopicPartition(topic, 0)])
    deadline = time.monotonic() + DEADLINE_S
    seen = []
    while b"committed" not in seen:
        if time.monotonic() > deadline:
            fail("timed out waiting for the committed transaction")
        for batch in reader.poll(timeout_ms=200).values():
            seen.extend(r.value for r in batch if r.key == b"tx")
    check(b"aborted" not in seen, f"the aborted record is hidden: {seen}")
    reader.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    offsets = admin.list_consumer_group_offsets(GROUP + "-tx")
    check(offsets.get(TopicPartition(topic, 0)) is not None
          and offsets[TopicPartition(topic, 0)].offset == 7,
          f"the transaction committed the group's offset: {offsets}")
    admin.close()


def _offset_and_metadata(offset):
    from kafka.structs import OffsetAndMetadata
    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


if __name__ == "__main__":
    main()
