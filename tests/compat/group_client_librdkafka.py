#!/usr/bin/env python3
"""Drives logbus's group and transaction coordinators over Kafka's wire
protocol with confluent-kafka (librdkafka), a client nobody here wrote.

    /path/to/python-with-confluent-kafka tests/compat/group_client_librdkafka.py HOST:PORT [TOPIC]

Needs a running logbus listener at HOST:PORT with TOPIC (default
`compat-groups`) already created with 4 partitions and empty. Exits 0
after printing `ok` when every check passes, 1 with the failed check on
stderr otherwise.

What it checks, in order:
 1. 40 keyed records produced (idempotent, acks=all) land in the topic.
 2. Two consumers of one group split the 4 partitions between them and
    together read every record (a partition that moves before any commit
    is read again: at least once).
 3. Each commits its position; the committed offsets add up to 40.
 4. The admin client lists the group and describes it Stable with two
    members and the range assignor.
 5. A third consumer joins: the group rebalances and every partition is
    owned by exactly one of the three.
 6. All three close (LeaveGroup): a fresh consumer resumes at the
    committed offsets and reads only records produced after them.
 7. The group is deleted once empty.
 8. A transactional producer's aborted records are hidden from a
    read_committed consumer and its committed ones are read, and
    send_offsets_to_transaction commits a group's offset with the
    transaction.

Each consumer polls on a thread of its own, as applications do, and
notifies a condition after each poll, on which the main thread waits;
every wait is bounded by a real-time deadline.
"""

import queue
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

GROUP = "compat-group-rdkafka"
RECORDS = 40
PARTITIONS = 4
DEADLINE_S = 60


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def consumer(bootstrap, topic, group=GROUP, **extra):
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "group-client-rdkafka",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "partition.assignment.strategy": "range",
    }
    config.update(extra)
    c = Consumer(config)
    if topic is not None:
        c.subscribe([topic])
    return c


# Every member notifies this after each of its polls; the main thread
# waits on it for its conditions (no sleeping between checks).
CHANGED = threading.Condition()


class Member:
    """One consumer polling on its own thread, the only thread that touches
    it: the main thread reads the state each poll leaves (under CHANGED's
    lock) and hands other calls over through `call`."""

    def __init__(self, c):
        self.c = c
        self.records = []
        self.assigned = []
        self.consumed = 0  # the sum of its positions (0 where none yet)
        self.error = None
        self.calls = queue.Queue()
        self.stop = threading.Event()
        # A daemon: a failed check ends the process at once.
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while not self.stop.is_set():
                m = self.c.poll(0.1)
                while not self.calls.empty():
                    f, answer = self.calls.get()
                    answer.put(f(self.c))
                assignment = self.c.assignment()
                consumed = sum(max(tp.offset, 0) for tp in self.c.position(assignment))
                with CHANGED:
                    self.assigned = sorted(tp.partition for tp in assignment)
                    self.consumed = consumed
                    if m is not None:
                        if m.error() is None:
                            self.records.append(m.value())
                        elif not m.error().code() < 0:
                            raise KafkaException(m.error())
                    CHANGED.notify_all()
        except Exception as e:  # reported by the main thread
            with CHANGED:
                self.error = e
                CHANGED.notify_all()

    def owned(self):
        with CHANGED:
            return list(self.assigned)

    def read(self):
        with CHANGED:
            return list(self.records)

    def call(self, f):
        """Runs f(consumer) on the member's thread, between two polls."""
        answer = queue.Queue()
        self.calls.put((f, answer))
        return answer.get(timeout=DEADLINE_S)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.c.close()


def wait_for(members, condition, what):
    """Waits until condition() holds, checked each time a member polled
    (under CHANGED's lock: it reads members' state, never calls them)."""
    with CHANGED:
        def settled():
            return condition() or any(m.error is not None for m in members)

        if not CHANGED.wait_for(settled, timeout=DEADLINE_S):
            fail(f"timed out waiting for {what}")
        for m in members:
            if m.error is not None:
                fail(f"a consumer failed while waiting for {what}: {m.error!r}")


def produce(bootstrap, topic):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failed = []
    for i in range(RECORDS):
        p.produce(topic, key=f"k{i}", value=f"v{i}",
                  on_delivery=lambda err, msg: err and failed.append(err))
    left = p.flush(DEADLINE_S)
    check(left == 0 and not failed, f"every record acknowledged: {left} left, {failed}")


def committed_offsets(admin, group):
    from confluent_kafka import ConsumerGroupTopicPartitions
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    result = futures[group].result(DEADLINE_S)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    bootstrap = sys.argv[1]
    topic = sys.argv[2] if len(sys.argv) > 2 else "compat-groups"
    expected = {f"v{i}".encode() for i in range(RECORDS)}

    # 1.
    produce(bootstrap, topic)

    # 2. Two members split the partitions and read everything.
    a, b = Member(consumer(bootstrap, topic)), Member(consumer(bootstrap, topic))
    # Read to the end by the members that own the partitions now: a
    # record read by a member before the split may be read again.
    wait_for([a, b],
             lambda: a.owned() and b.owned()
             and sorted(a.owned() + b.owned()) == list(range(PARTITIONS))
             and a.consumed + b.consumed == RECORDS,
             "two consumers to split the partitions and read every record")
    check(set(a.read()) | set(b.read()) == expected, "every record read")
    check(not set(a.owned()) & set(b.owned()), "no partition owned twice")

    # 3. Commits: each member's positions, all or nothing.
    for m in (a, b):
        m.call(lambda c: c.commit(offsets=c.position(c.assignment()), asynchronous=False))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    offsets = committed_offsets(admin, GROUP)
    check(sum(offsets.values()) == RECORDS, f"committed offsets add up to {RECORDS}: {offsets}")

    # 4. The admin view.
    listed = admin.list_consumer_groups().result(DEADLINE_S)
    ids = [g.group_id for g in listed.valid]
    check(GROUP in ids, f"{GROUP} listed: {ids}")
    described = admin.describe_consumer_groups([GROUP])[GROUP].result(DEADLINE_S)
    check(str(described.state).endswith("STABLE"), f"Stable: {described.state}")
    check(len(described.members) == 2, f"two members: {described.members}")
    check(described.partition_assignor == "range", f"range: {described.partition_assignor}")

    # 5. A third member rebalances the group.
    c = Member(consumer(bootstrap, topic))
    wait_for([a, b, c],
             lambda: all(m.owned() for m in (a, b, c))
             and sorted(a.owned() + b.owned() + c.owned()) == list(range(PARTITIONS)),
             "three consumers to share the partitions")

    # 6. Leave, then resume from the commits.
    for m in (a, b, c):
        m.close()
    fresh = Member(consumer(bootstrap, topic))
    wait_for([fresh], lambda: fresh.owned() == list(range(PARTITIONS)), "a lone consumer")
    positions = fresh.call(lambda c: c.committed(
        [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=DEADLINE_S))
    check({tp.partition: tp.offset for tp in positions} == offsets,
          f"the fresh member sees the commits: {positions}")
    # Nothing below the commits is read again: after one new record per
    # partition, those are all the fresh member has read.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for part in range(PARTITIONS):
        p.produce(topic, key="after", value=f"after-{part}", partition=part)
    check(p.flush(DEADLINE_S) == 0, "the new records acknowledged")
    wait_for([fresh], lambda: len(fresh.records) >= PARTITIONS, "the new records")
    check(sorted(fresh.read()) == sorted(f"after-{part}".encode() for part in range(PARTITIONS)),
          f"only the records after the commits read: {fresh.read()}")
    fresh.close()

    # 7. Delete the empty group.
    admin.delete_consumer_groups([GROUP])[GROUP].result(DEADLINE_S)
    listed = admin.list_consumer_groups().result(DEADLINE_S)
    check(GROUP not in [g.group_id for g in listed.valid], "the group is gone")

    # 8. Transactions.
    transactions(bootstrap, topic, admin)
    print("ok")


def transactions(bootstrap, topic, admin):
    group = GROUP + "-tx"
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "compat-tx-rdkafka"})
    p.init_transactions(DEADLINE_S)
    p.begin_transaction()
    p.produce(topic, key="tx", value="aborted", partition=0)
    p.abort_transaction(DEADLINE_S)
    p.begin_transaction()
    p.produce(topic, key="tx", value="committed", partition=0)
    # The group's metadata as a member of it would send it: a consumer
    # that only assigns (never joins) is enough for a simple group.
    member = consumer(bootstrap, None, group=group)
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 7)],
                                  member.consumer_group_metadata(), DEADLINE_S)
    p.commit_transaction(DEADLINE_S)
    member.close()

    reader = consumer(bootstrap, None, group="compat-reader-rdkafka",
                      **{"isolation.level": "read_committed"})
    reader.assign([TopicPartition(topic, 0, 0)])
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while b"committed" not in seen:
        if time.monotonic() > deadline:
            fail(f"timed out waiting for the committed transaction: {seen}")
        m = reader.poll(0.2)
        if m is not None and m.error() is None and m.key() == b"tx":
            seen.append(m.value())
    check(b"aborted" not in seen, f"the aborted record is hidden: {seen}")
    reader.close()
    offsets = committed_offsets(admin, group)
    check(offsets.get(0) == 7, f"the transaction committed the group's offset: {offsets}")


if __name__ == "__main__":
    main()
