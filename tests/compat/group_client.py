#!/usr/bin/env python3
"""Drives logbus's group coordinator over Kafka's wire protocol with
kafka-python (3.0), a client nobody here wrote.

    /path/to/python-with-kafka-python tests/compat/group_client.py HOST:PORT [TOPIC]

Needs a running logbus listener (`logbus serve`) at HOST:PORT with TOPIC
(default `compat-groups`) already created with 4 partitions, and
`group.initial.rebalance.delay.ms` at Kafka's default, 3000 (see below).
Exits 0 when every check passes, 1 with the failed check on stderr
otherwise; a step that overruns its deadline ends the run with every
thread's stack on stderr. `tests/server.rs` runs it in CI. With
GROUP_CLIENT_DEBUG set, kafka-python logs at DEBUG on stderr.

Why the initial rebalance delay: kafka-python 3.0.12 can lose a completed
join. `ConsumerCoordinator.need_rejoin()` says whether `poll()` drives
the join (`ensure_active_group`), but unlike Java's
`rejoinNeededOrPending()` it does not count a JoinGroup/SyncGroup still in
flight. A leader that assigned partitions before it had the topic's
metadata (the group's first join answered at once, the metadata
arriving about 100 ms after `subscribe`) rejoins when the metadata
arrives only because its metadata snapshot changed; if that `poll()`
times out while the join is in flight, the leader's new assignment
snapshot makes `need_rejoin()` False, the finished join's assignment is
never applied, and the consumer polls forever with no partitions and
every request answered. A Kafka broker at its default
`group.initial.rebalance.delay.ms` (3000) holds the first join of an
empty group for 3 s, by which time every member has the metadata, so the
first assignment is the final one; logbus defaults it to 0 and the test
sets Kafka's value. (kafka-python also replaces a join that finished
between two polls with a new JoinGroup, since `join_group_async` only
reuses a join still in flight: an extra rebalance, not a stall. So each
step waits for settled assignments, not just non-empty ones.)

What it checks, in order:
 1. 40 keyed records produced (acks=all) land in the topic.
 2. Two consumers of one group split the 4 partitions between them
    (JoinGroup/SyncGroup parked until both are in, the leader's
    assignment delivered to each) and together read all 40 records (some
    twice: a partition that moves before any commit is read again).
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

Every wait is bounded by a real-time deadline; each consumer polls on a
thread of its own and notifies a condition the main thread waits on.
"""

import faulthandler
import logging
import os
import subprocess
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

GROUP = "compat-group"
RECORDS = 40
PARTITIONS = 4
DEADLINE_S = 60
# A step's own waits end by DEADLINE_S with a clear failure; this bounds
# every other call (commits, admin requests, the transaction, the resume
# process) and ends the run if a step hangs.
STEP_S = 2 * DEADLINE_S


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def step(name):
    """Starts step `name`: says so on stderr and rearms the watchdog,
    which, STEP_S from now, writes every thread's stack to stderr and
    exits 1."""
    print(f"step: {name}", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(STEP_S, exit=True)


def group_state(c):
    """What a consumer's group membership looks like from inside
    kafka-python, for a failure message (private attributes, read only)."""
    coordinator = getattr(c, "_coordinator", None)
    join = getattr(coordinator, "_join_task", None)
    return (f"assignment={sorted(p.partition for p in c.assignment())} "
            f"state={getattr(coordinator, 'state', '?')} "
            f"rejoin_needed={getattr(coordinator, 'rejoin_needed', '?')} "
            f"join={'none' if join is None else 'done' if join.is_done else 'in flight'}")


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


def settled(consumers, partitions):
    """Whether `consumers` own `partitions` between them, each some and
    none twice, with no join left to apply (kafka-python's pending join,
    where it has one): the group is stable as the members see it, not a
    moment of a rebalance where one still holds its old partitions."""
    owned = [tp for c in consumers for tp in c.assignment()]
    return (all(c.assignment() for c in consumers)
            and len(owned) == len(partitions)
            and set(owned) == set(partitions)
            and not any(getattr(getattr(c, "_coordinator", None), "_join_task", None)
                        for c in consumers))


def poll_until(consumers, done, what):
    """Polls every consumer on a thread of its own, as applications do,
    until done(records) holds; returns each consumer's records.

    One thread per consumer matters: a coordinator parks a JoinGroup until
    every member has joined, and kafka-python abandons a join that one
    short poll did not see completed, so consumers polled in turn from one
    thread can rejoin each other forever (against Kafka too)."""
    records = {id(c): [] for c in consumers}
    # Each poll notifies it; the main thread waits on it for done().
    changed = threading.Condition()
    stop = threading.Event()
    errors = []

    def run(c):
        try:
            while not stop.is_set():
                polled = c.poll(timeout_ms=100)
                with changed:
                    for batch in polled.values():
                        records[id(c)].extend(batch)
                    changed.notify_all()
        except Exception as e:  # reported by the main thread
            with changed:
                errors.append(e)
                changed.notify_all()

    threads = [threading.Thread(target=run, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    try:
        with changed:
            finished = changed.wait_for(lambda: errors or done(records), timeout=DEADLINE_S)
    finally:
        stop.set()
        for t in threads:
            t.join()
    if not finished:
        states = "; ".join(group_state(c) for c in consumers)
        fail(f"timed out waiting for {what}: {states}")
    if errors:
        fail(f"a consumer failed while waiting for {what}: {errors[0]!r}")
    return records


def produce(bootstrap, topic):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(RECORDS):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()


def resume(bootstrap, topic, partitions):
    """Step 6's lone consumer: it owns every partition and starts at the
    group's commits, with nothing new to read."""
    step("6. a fresh consumer resumes at the commits")
    fresh = consumer(bootstrap, topic)
    poll_until([fresh], lambda r: settled([fresh], partitions), "a lone consumer")
    for tp in partitions:
        check(fresh.position(tp) == fresh.committed(tp), f"{tp} resumes at its commit")
    extra = fresh.poll(timeout_ms=1_000)
    check(not any(extra.values()), f"nothing new: {extra}")
    fresh.close()
    faulthandler.cancel_dump_traceback_later()


def main():
    if os.environ.get("GROUP_CLIENT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG,
                            format="%(relativeCreated)d %(threadName)s %(name)s %(message)s")
    if len(sys.argv) < 2:
        fail(__doc__)
    bootstrap = sys.argv[1]
    topic = sys.argv[2] if len(sys.argv) > 2 else "compat-groups"
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    if sys.argv[3:] == ["--resume"]:
        resume(bootstrap, topic, partitions)
        return

    step("1. produce")
    produce(bootstrap, topic)

    step("2. two members split the partitions and read everything")
    a, b = consumer(bootstrap, topic), consumer(bootstrap, topic)
    read = poll_until(
        [a, b],
        lambda r: sum(len(v) for v in r.values()) >= RECORDS and settled([a, b], partitions),
        "two consumers to read every record",
    )
    owned_a, owned_b = set(a.assignment()), set(b.assignment())
    check(owned_a and owned_b, f"both own partitions: {owned_a} {owned_b}")
    check(not (owned_a & owned_b), f"no partition owned twice: {owned_a & owned_b}")
    check(owned_a | owned_b == set(partitions), "every partition is owned")
    # Until the second member is in, the first owns every partition, and
    # nothing is committed yet: a partition that moves is read again from
    # the start (at least once), so records may repeat, never go missing.
    values = {r.value for v in read.values() for r in v}
    check(values == {f"v{i}".encode() for i in range(RECORDS)},
          f"every record read: {len(values)} of {RECORDS}")

    step("3. commits come back")
    for c in (a, b):
        c.commit()
    for tp in partitions:
        owner = a if tp in owned_a else b
        check(owner.committed(tp) == owner.position(tp),
              f"{tp}: committed {owner.committed(tp)} != position {owner.position(tp)}")

    step("4. the admin view (kafka-python 3.0's admin API)")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="group-admin")
    listed = {g["group_id"]: g for g in admin.list_groups()}
    check(GROUP in listed, f"{GROUP} listed: {listed}")
    check(listed[GROUP]["protocol_type"] == "consumer", f"consumer protocol: {listed[GROUP]}")
    offsets = admin.list_group_offsets({GROUP: None})[GROUP]
    check(sum(o.offset for o in offsets.values()) == RECORDS,
          f"committed offsets add up to {RECORDS}: {offsets}")
    described = admin.describe_groups([GROUP])[GROUP]
    check(described["group_state"] == "Stable", f"Stable: {described}")
    check(len(described["members"]) == 2, f"two members: {described['members']}")
    check(described["protocol_data"] == "range", f"range: {described}")
    assigned = sorted(
        p
        for m in described["members"]
        for t in m["member_assignment"]["assigned_partitions"]
        for p in t["partitions"]
    )
    check(assigned == list(range(PARTITIONS)),
          f"the leader's assignment, as the coordinator keeps it: {assigned}")

    step("5. a third member rebalances the group")
    c = consumer(bootstrap, topic)
    poll_until(
        [a, b, c],
        lambda r: settled([a, b, c], partitions),
        "three consumers to share the partitions",
    )
    owned = [tp for x in (a, b, c) for tp in x.assignment()]
    check(sorted(owned) == sorted(partitions), f"each partition owned once: {owned}")

    # 6. Leave, then resume from the commits in a process of its own, as
    # a restarted application does (it has its own watchdog).
    step("6. leave")
    for x in (a, b, c):
        x.close()
    resumed = subprocess.run([sys.executable, __file__, bootstrap, topic, "--resume"],
                             timeout=STEP_S)
    check(resumed.returncode == 0, "a fresh consumer resumes from the commits")

    step("7. delete the empty group")
    deleted = admin.delete_groups([GROUP])
    check(deleted == {GROUP: "OK"}, f"group deleted: {deleted}")
    remaining = [g["group_id"] for g in admin.list_groups()]
    check(GROUP not in remaining, f"{GROUP} gone: {remaining}")

    step("8. transactions, where kafka-python has them")
    if hasattr(KafkaProducer, "init_transactions"):
        transactions(bootstrap, topic, partitions)
    admin.close()
    faulthandler.cancel_dump_traceback_later()
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
    offsets = admin.list_group_offsets({GROUP + "-tx": None})[GROUP + "-tx"]
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
