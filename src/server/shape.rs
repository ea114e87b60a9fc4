//! A request body's shape, checked before it is decoded: every array count
//! and every string or bytes length must fit in the bytes that remain.
//!
//! `kafka-protocol` reserves an array's capacity from the count on the
//! wire before it decodes a single element, so a request of a few bytes
//! declaring two billion elements asks the allocator for hundreds of
//! gigabytes, and a failed allocation aborts the process. Kafka's own
//! decoder refuses such a count (an element takes at least one byte); this
//! walk does the same for the requests the listener decodes, following each
//! one's schema (fields by version; compact encodings and tagged fields in
//! flexible versions) without allocating.
//!
//! Every API the listener answers has a schema here, the coordinators'
//! (groups, transactions) included, at every version `kafka-protocol`
//! knows; a test checks that each walk of a well-formed request ends
//! exactly where the request does. An API without a schema would be
//! decoded unchecked: [`has_schema`] lets the dispatch refuse it.

use kafka_protocol::messages::ApiKey;

/// A field's wire type.
#[derive(Debug, Clone, Copy)]
enum T {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Bool,
    /// A (nullable) string.
    Str,
    /// (Nullable) bytes, record batches included.
    Bytes,
    /// An array of structures with these fields.
    Arr(&'static [F]),
    /// An array of int32.
    ArrI32,
    /// An array of strings.
    ArrStr,
}

/// A field present from version `since` to version `until`.
#[derive(Debug, Clone, Copy)]
struct F {
    since: i16,
    until: i16,
    t: T,
}

/// A field in every version.
const fn all(t: T) -> F {
    F {
        since: 0,
        until: i16::MAX,
        t,
    }
}

/// A field from version `since` on.
const fn from(since: i16, t: T) -> F {
    F {
        since,
        until: i16::MAX,
        t,
    }
}

/// A field up to version `until`.
const fn upto(until: i16, t: T) -> F {
    F { since: 0, until, t }
}

/// A request's schema: its first flexible version and its fields.
#[derive(Debug, Clone, Copy)]
struct Schema {
    flexible_from: i16,
    fields: &'static [F],
}

use T::{Arr, ArrI32, ArrStr, Bool, Bytes, I8, I16, I32, I64, Str, Uuid};

const METADATA: Schema = Schema {
    flexible_from: 9,
    fields: &[
        all(Arr(&[from(10, Uuid), all(Str)])),
        from(4, Bool),
        F {
            since: 8,
            until: 10,
            t: Bool,
        },
        from(8, Bool),
    ],
};

const PRODUCE: Schema = Schema {
    flexible_from: 9,
    fields: &[
        from(3, Str),
        all(I16),
        all(I32),
        all(Arr(&[
            upto(12, Str),
            from(13, Uuid),
            all(Arr(&[all(I32), all(Bytes)])),
        ])),
    ],
};

const FETCH: Schema = Schema {
    flexible_from: 12,
    fields: &[
        upto(14, I32),
        all(I32),
        all(I32),
        from(3, I32),
        from(4, I8),
        from(7, I32),
        from(7, I32),
        all(Arr(&[
            upto(12, Str),
            from(13, Uuid),
            all(Arr(&[
                all(I32),
                from(9, I32),
                all(I64),
                from(12, I32),
                from(5, I64),
                all(I32),
            ])),
        ])),
        from(
            7,
            Arr(&[
                F {
                    since: 7,
                    until: 12,
                    t: Str,
                },
                from(13, Uuid),
                from(7, ArrI32),
            ]),
        ),
        from(11, Str),
    ],
};

const LIST_OFFSETS: Schema = Schema {
    flexible_from: 6,
    fields: &[
        all(I32),
        from(2, I8),
        all(Arr(&[
            all(Str),
            all(Arr(&[all(I32), from(4, I32), all(I64), upto(0, I32)])),
        ])),
        from(10, I32),
    ],
};

const OFFSET_FOR_LEADER_EPOCH: Schema = Schema {
    flexible_from: 4,
    fields: &[
        from(3, I32),
        all(Arr(&[
            all(Str),
            all(Arr(&[all(I32), from(2, I32), all(I32)])),
        ])),
    ],
};

const CREATE_TOPICS: Schema = Schema {
    flexible_from: 5,
    fields: &[
        all(Arr(&[
            all(Str),
            all(I32),
            all(I16),
            all(Arr(&[all(I32), all(ArrI32)])),
            all(Arr(&[all(Str), all(Str)])),
        ])),
        all(I32),
        from(1, Bool),
    ],
};

const DELETE_TOPICS: Schema = Schema {
    flexible_from: 4,
    fields: &[
        from(6, Arr(&[all(Str), all(Uuid)])),
        upto(5, ArrStr),
        all(I32),
    ],
};

const DELETE_RECORDS: Schema = Schema {
    flexible_from: 2,
    fields: &[
        all(Arr(&[all(Str), all(Arr(&[all(I32), all(I64)]))])),
        all(I32),
    ],
};

const DESCRIBE_CONFIGS: Schema = Schema {
    flexible_from: 4,
    fields: &[
        all(Arr(&[all(I8), all(Str), all(ArrStr)])),
        from(1, Bool),
        from(3, Bool),
    ],
};

const ALTER_CONFIGS: Schema = Schema {
    flexible_from: 2,
    fields: &[
        all(Arr(&[all(I8), all(Str), all(Arr(&[all(Str), all(Str)]))])),
        all(Bool),
    ],
};

const CREATE_PARTITIONS: Schema = Schema {
    flexible_from: 2,
    fields: &[
        all(Arr(&[all(Str), all(I32), all(Arr(&[all(ArrI32)]))])),
        all(I32),
        all(Bool),
    ],
};

const INCREMENTAL_ALTER_CONFIGS: Schema = Schema {
    flexible_from: 1,
    fields: &[
        all(Arr(&[
            all(I8),
            all(Str),
            all(Arr(&[all(Str), all(I8), all(Str)])),
        ])),
        all(Bool),
    ],
};

const API_VERSIONS: Schema = Schema {
    flexible_from: 3,
    fields: &[from(3, Str), from(3, Str)],
};

const DESCRIBE_CLUSTER: Schema = Schema {
    flexible_from: 0,
    fields: &[all(Bool), from(1, I8), from(2, Bool)],
};

const FIND_COORDINATOR: Schema = Schema {
    flexible_from: 3,
    fields: &[upto(3, Str), from(1, I8), from(4, ArrStr)],
};

const JOIN_GROUP: Schema = Schema {
    flexible_from: 6,
    fields: &[
        all(Str),
        all(I32),
        from(1, I32),
        all(Str),
        from(5, Str),
        all(Str),
        all(Arr(&[all(Str), all(Bytes)])),
        from(8, Str),
    ],
};

const SYNC_GROUP: Schema = Schema {
    flexible_from: 4,
    fields: &[
        all(Str),
        all(I32),
        all(Str),
        from(3, Str),
        from(5, Str),
        from(5, Str),
        all(Arr(&[all(Str), all(Bytes)])),
    ],
};

const HEARTBEAT: Schema = Schema {
    flexible_from: 4,
    fields: &[all(Str), all(I32), all(Str), from(3, Str)],
};

const LEAVE_GROUP: Schema = Schema {
    flexible_from: 4,
    fields: &[
        all(Str),
        upto(2, Str),
        from(3, Arr(&[all(Str), all(Str), from(5, Str)])),
    ],
};

const OFFSET_COMMIT: Schema = Schema {
    flexible_from: 8,
    fields: &[
        all(Str),
        all(I32),
        all(Str),
        from(7, Str),
        upto(4, I64),
        all(Arr(&[
            all(Str),
            all(Arr(&[all(I32), all(I64), from(6, I32), all(Str)])),
        ])),
    ],
};

const OFFSET_FETCH: Schema = Schema {
    flexible_from: 6,
    fields: &[
        upto(7, Str),
        upto(7, Arr(&[all(Str), all(ArrI32)])),
        from(
            8,
            Arr(&[
                all(Str),
                from(9, Str),
                from(9, I32),
                all(Arr(&[all(Str), all(ArrI32)])),
            ]),
        ),
        from(7, Bool),
    ],
};

const LIST_GROUPS: Schema = Schema {
    flexible_from: 3,
    fields: &[from(4, ArrStr), from(5, ArrStr)],
};

const DESCRIBE_GROUPS: Schema = Schema {
    flexible_from: 5,
    fields: &[all(ArrStr), from(3, Bool)],
};

const DELETE_GROUPS: Schema = Schema {
    flexible_from: 2,
    fields: &[all(ArrStr)],
};

const INIT_PRODUCER_ID: Schema = Schema {
    flexible_from: 2,
    fields: &[all(Str), all(I32), from(3, I64), from(3, I16)],
};

/// AddPartitionsToTxn's topics: a name and partition numbers.
const TXN_TOPICS: &[F] = &[all(Str), all(ArrI32)];

const ADD_PARTITIONS_TO_TXN: Schema = Schema {
    flexible_from: 3,
    fields: &[
        from(
            4,
            Arr(&[
                all(Str),
                all(I64),
                all(I16),
                all(Bool),
                all(Arr(TXN_TOPICS)),
            ]),
        ),
        upto(3, Str),
        upto(3, I64),
        upto(3, I16),
        upto(3, Arr(TXN_TOPICS)),
    ],
};

const ADD_OFFSETS_TO_TXN: Schema = Schema {
    flexible_from: 3,
    fields: &[all(Str), all(I64), all(I16), all(Str)],
};

const END_TXN: Schema = Schema {
    flexible_from: 3,
    fields: &[all(Str), all(I64), all(I16), all(Bool)],
};

const TXN_OFFSET_COMMIT: Schema = Schema {
    flexible_from: 3,
    fields: &[
        all(Str),
        all(Str),
        all(I64),
        all(I16),
        from(3, I32),
        from(3, Str),
        from(3, Str),
        all(Arr(&[
            all(Str),
            all(Arr(&[all(I32), all(I64), from(2, I32), all(Str)])),
        ])),
    ],
};

const SASL_HANDSHAKE: Schema = Schema {
    // Never flexible.
    flexible_from: i16::MAX,
    fields: &[all(Str)],
};

const SASL_AUTHENTICATE: Schema = Schema {
    flexible_from: 2,
    fields: &[all(Bytes)],
};

/// The schema of `api`'s requests, if this module has it.
fn schema(api: ApiKey) -> Option<Schema> {
    Some(match api {
        ApiKey::Metadata => METADATA,
        ApiKey::Produce => PRODUCE,
        ApiKey::Fetch => FETCH,
        ApiKey::ListOffsets => LIST_OFFSETS,
        ApiKey::OffsetForLeaderEpoch => OFFSET_FOR_LEADER_EPOCH,
        ApiKey::CreateTopics => CREATE_TOPICS,
        ApiKey::DeleteTopics => DELETE_TOPICS,
        ApiKey::DeleteRecords => DELETE_RECORDS,
        ApiKey::DescribeConfigs => DESCRIBE_CONFIGS,
        ApiKey::AlterConfigs => ALTER_CONFIGS,
        ApiKey::CreatePartitions => CREATE_PARTITIONS,
        ApiKey::IncrementalAlterConfigs => INCREMENTAL_ALTER_CONFIGS,
        ApiKey::ApiVersions => API_VERSIONS,
        ApiKey::DescribeCluster => DESCRIBE_CLUSTER,
        ApiKey::FindCoordinator => FIND_COORDINATOR,
        ApiKey::JoinGroup => JOIN_GROUP,
        ApiKey::SyncGroup => SYNC_GROUP,
        ApiKey::Heartbeat => HEARTBEAT,
        ApiKey::LeaveGroup => LEAVE_GROUP,
        ApiKey::OffsetCommit => OFFSET_COMMIT,
        ApiKey::OffsetFetch => OFFSET_FETCH,
        ApiKey::ListGroups => LIST_GROUPS,
        ApiKey::DescribeGroups => DESCRIBE_GROUPS,
        ApiKey::DeleteGroups => DELETE_GROUPS,
        ApiKey::InitProducerId => INIT_PRODUCER_ID,
        ApiKey::AddPartitionsToTxn => ADD_PARTITIONS_TO_TXN,
        ApiKey::AddOffsetsToTxn => ADD_OFFSETS_TO_TXN,
        ApiKey::EndTxn => END_TXN,
        ApiKey::TxnOffsetCommit => TXN_OFFSET_COMMIT,
        ApiKey::SaslHandshake => SASL_HANDSHAKE,
        ApiKey::SaslAuthenticate => SASL_AUTHENTICATE,
        _ => return None,
    })
}

/// Whether `api`'s requests can be checked here.
pub(super) fn has_schema(api: ApiKey) -> bool {
    schema(api).is_some()
}

/// Checks `body` (a request of `api` at `version`, after its header):
/// every count and length fits in what remains. A body that ends early is
/// left to the decoder to refuse.
pub(super) fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    let Some(schema) = schema(api) else {
        return Ok(());
    };
    let mut walk = Walk {
        buf: body,
        pos: 0,
        version,
        flexible: version >= schema.flexible_from,
    };
    match walk.structure(schema.fields) {
        Ok(()) | Err(Stop::Short) => Ok(()),
        Err(Stop::Absurd(reason)) => Err(reason),
    }
}

/// Why a walk stopped.
enum Stop {
    /// The body ended early: the decoder refuses it.
    Short,
    /// A count or length that cannot fit.
    Absurd(String),
}

struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Stop> {
        if n > self.remaining() {
            return Err(Stop::Short);
        }
        let at = self.pos;
        self.pos += n;
        Ok(&self.buf[at..at + n])
    }

    fn varint(&mut self) -> Result<u32, Stop> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Absurd("a varint longer than 5 bytes".to_string()))
    }

    fn int16(&mut self) -> Result<i16, Stop> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn int32(&mut self) -> Result<i32, Stop> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length or count: `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, Stop> {
        let n: i64 = if self.flexible {
            i64::from(self.varint()?) - 1
        } else if wide {
            i64::from(self.int32()?)
        } else {
            i64::from(self.int16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(Stop::Absurd(format!("a negative length or count ({n})"))),
            // At least one byte per element or byte: more cannot be there.
            n if n as u64 > self.remaining() as u64 => Err(Stop::Absurd(format!(
                "a length or count of {n} with {} bytes left",
                self.remaining()
            ))),
            n => Ok(Some(n as usize)),
        }
    }

    fn string(&mut self) -> Result<(), Stop> {
        if let Some(n) = self.length(false)? {
            self.take(n)?;
        }
        Ok(())
    }

    fn field(&mut self, t: T) -> Result<(), Stop> {
        match t {
            I8 | Bool => self.take(1).map(drop),
            I16 => self.take(2).map(drop),
            I32 => self.take(4).map(drop),
            I64 => self.take(8).map(drop),
            Uuid => self.take(16).map(drop),
            Str => self.string(),
            Bytes => {
                if let Some(n) = self.length(true)? {
                    self.take(n)?;
                }
                Ok(())
            }
            Arr(fields) => {
                for _ in 0..self.length(true)?.unwrap_or(0) {
                    self.structure(fields)?;
                }
                Ok(())
            }
            ArrI32 => {
                let n = self.length(true)?.unwrap_or(0);
                self.take(n.saturating_mul(4)).map(drop)
            }
            ArrStr => {
                for _ in 0..self.length(true)?.unwrap_or(0) {
                    self.string()?;
                }
                Ok(())
            }
        }
    }

    fn structure(&mut self, fields: &[F]) -> Result<(), Stop> {
        for f in fields {
            if (f.since..=f.until).contains(&self.version) {
                self.field(f.t)?;
            }
        }
        if self.flexible {
            let tags = self.varint()?;
            if tags as usize > self.remaining() {
                return Err(Stop::Absurd(format!("{tags} tagged fields")));
            }
            for _ in 0..tags {
                self.varint()?;
                let size = self.varint()? as usize;
                self.take(size)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    /// `message` encoded at `version`, or `None` if it does not encode
    /// there (a default value a version cannot carry).
    fn encoded(message: &impl Encodable, version: i16) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        message.encode(&mut out, version).ok()?;
        Some(out.to_vec())
    }

    /// Walks `body` as `api` at `version`: it must end exactly where the
    /// body does.
    fn walks_exactly(api: ApiKey, version: i16, body: &[u8]) {
        let schema = schema(api).unwrap();
        let mut walk = Walk {
            buf: body,
            pos: 0,
            version,
            flexible: version >= schema.flexible_from,
        };
        assert!(
            walk.structure(schema.fields).is_ok(),
            "{api:?} v{version}: the walk failed on {body:?}"
        );
        assert_eq!(walk.pos, body.len(), "{api:?} v{version}: {body:?}");
    }

    fn two<T: Clone>(item: T) -> Vec<T> {
        vec![item.clone(), item]
    }

    fn s(text: &'static str) -> StrBytes {
        StrBytes::from_static_str(text)
    }

    fn topic(text: &'static str) -> TopicName {
        TopicName(s(text))
    }

    /// Encodes a request at a version (`None` where it cannot be).
    type Builder = Box<dyn Fn(i16) -> Option<Vec<u8>>>;

    /// A request of `api` with two elements in each of its arrays (nested
    /// ones too) and non-empty strings, for the APIs with arrays.
    fn populated(api: ApiKey) -> Option<Builder> {
        macro_rules! at {
            ($request:expr) => {{
                let request = $request;
                Some(Box::new(move |v| encoded(&request, v)))
            }};
        }
        match api {
            ApiKey::Metadata => {
                let mut t = metadata_request::MetadataRequestTopic::default();
                t.name = Some(topic("orders"));
                let mut r = MetadataRequest::default();
                r.topics = Some(two(t));
                at!(r)
            }
            ApiKey::Produce => {
                let mut p = produce_request::PartitionProduceData::default();
                p.records = Some(bytes::Bytes::from_static(&[1, 2, 3]));
                let mut t = produce_request::TopicProduceData::default();
                t.name = topic("orders");
                t.partition_data = two(p);
                let mut r = ProduceRequest::default();
                r.transactional_id = Some(TransactionalId(s("tx")));
                r.topic_data = two(t);
                at!(r)
            }
            ApiKey::Fetch => {
                let mut t = fetch_request::FetchTopic::default();
                t.topic = topic("orders");
                t.partitions = two(fetch_request::FetchPartition::default());
                let mut f = fetch_request::ForgottenTopic::default();
                f.topic = topic("old");
                f.partitions = vec![1, 2, 3];
                let mut r = FetchRequest::default();
                r.topics = two(t);
                r.forgotten_topics_data = two(f);
                r.rack_id = s("rack");
                at!(r)
            }
            ApiKey::ListOffsets => {
                let mut t = list_offsets_request::ListOffsetsTopic::default();
                t.name = topic("orders");
                t.partitions = two(list_offsets_request::ListOffsetsPartition::default());
                let mut r = ListOffsetsRequest::default();
                r.topics = two(t);
                at!(r)
            }
            ApiKey::OffsetForLeaderEpoch => {
                let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                t.topic = topic("orders");
                t.partitions = two(Default::default());
                let mut r = OffsetForLeaderEpochRequest::default();
                r.topics = two(t);
                at!(r)
            }
            ApiKey::CreateTopics => {
                let mut a = create_topics_request::CreatableReplicaAssignment::default();
                a.broker_ids = vec![BrokerId(1), BrokerId(2)];
                let mut c = create_topics_request::CreatableTopicConfig::default();
                c.name = s("retention.ms");
                c.value = Some(s("1"));
                let mut t = create_topics_request::CreatableTopic::default();
                t.name = topic("orders");
                t.assignments = two(a);
                t.configs = two(c);
                let mut r = CreateTopicsRequest::default();
                r.topics = two(t);
                at!(r)
            }
            ApiKey::DeleteTopics => {
                let mut t = delete_topics_request::DeleteTopicState::default();
                t.name = Some(topic("orders"));
                let mut r = DeleteTopicsRequest::default();
                r.topics = two(t);
                r.topic_names = two(topic("orders"));
                Some(Box::new(move |v| {
                    let mut r = r.clone();
                    if v >= 6 {
                        r.topic_names.clear();
                    } else {
                        r.topics.clear();
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::DeleteRecords => {
                let mut t = delete_records_request::DeleteRecordsTopic::default();
                t.name = topic("orders");
                t.partitions = two(Default::default());
                let mut r = DeleteRecordsRequest::default();
                r.topics = two(t);
                at!(r)
            }
            ApiKey::DescribeConfigs => {
                let mut c = describe_configs_request::DescribeConfigsResource::default();
                c.resource_name = s("orders");
                c.configuration_keys = Some(two(s("retention.ms")));
                let mut r = DescribeConfigsRequest::default();
                r.resources = two(c);
                at!(r)
            }
            ApiKey::AlterConfigs => {
                let mut c = alter_configs_request::AlterableConfig::default();
                c.name = s("retention.ms");
                c.value = Some(s("1"));
                let mut res = alter_configs_request::AlterConfigsResource::default();
                res.resource_name = s("orders");
                res.configs = two(c);
                let mut r = AlterConfigsRequest::default();
                r.resources = two(res);
                at!(r)
            }
            ApiKey::IncrementalAlterConfigs => {
                let mut c = incremental_alter_configs_request::AlterableConfig::default();
                c.name = s("retention.ms");
                c.value = Some(s("1"));
                let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
                res.resource_name = s("orders");
                res.configs = two(c);
                let mut r = IncrementalAlterConfigsRequest::default();
                r.resources = two(res);
                at!(r)
            }
            ApiKey::CreatePartitions => {
                let mut a = create_partitions_request::CreatePartitionsAssignment::default();
                a.broker_ids = vec![BrokerId(1)];
                let mut t = create_partitions_request::CreatePartitionsTopic::default();
                t.name = topic("orders");
                t.assignments = Some(two(a));
                let mut r = CreatePartitionsRequest::default();
                r.topics = two(t);
                at!(r)
            }
            ApiKey::JoinGroup => {
                let mut p = join_group_request::JoinGroupRequestProtocol::default();
                p.name = s("range");
                p.metadata = bytes::Bytes::from_static(&[0, 1]);
                let mut r = JoinGroupRequest::default();
                r.group_id = GroupId(s("g"));
                r.protocol_type = s("consumer");
                r.protocols = two(p);
                at!(r)
            }
            ApiKey::SyncGroup => {
                let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                a.member_id = s("m");
                a.assignment = bytes::Bytes::from_static(&[7]);
                let mut r = SyncGroupRequest::default();
                r.group_id = GroupId(s("g"));
                r.assignments = two(a);
                at!(r)
            }
            ApiKey::LeaveGroup => {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = s("m");
                let mut r = LeaveGroupRequest::default();
                r.group_id = GroupId(s("g"));
                r.members = two(m);
                Some(Box::new(move |v| {
                    let mut r = r.clone();
                    if v < 3 {
                        r.members.clear();
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::OffsetCommit => {
                let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                t.name = topic("orders");
                t.partitions = two(Default::default());
                let mut r = OffsetCommitRequest::default();
                r.group_id = GroupId(s("g"));
                r.topics = two(t);
                at!(r)
            }
            ApiKey::OffsetFetch => {
                let mut old = offset_fetch_request::OffsetFetchRequestTopic::default();
                old.name = topic("orders");
                old.partition_indexes = vec![0, 1];
                let mut new = offset_fetch_request::OffsetFetchRequestTopics::default();
                new.name = topic("orders");
                new.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = GroupId(s("g"));
                g.topics = Some(two(new));
                Some(Box::new(move |v| {
                    let mut r = OffsetFetchRequest::default();
                    if v >= 8 {
                        r.groups = two(g.clone());
                    } else {
                        r.group_id = GroupId(s("g"));
                        r.topics = Some(two(old.clone()));
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::DescribeGroups => {
                let mut r = DescribeGroupsRequest::default();
                r.groups = two(GroupId(s("g")));
                at!(r)
            }
            ApiKey::DeleteGroups => {
                let mut r = DeleteGroupsRequest::default();
                r.groups_names = two(GroupId(s("g")));
                at!(r)
            }
            ApiKey::ListGroups => {
                let mut r = ListGroupsRequest::default();
                r.states_filter = two(s("Stable"));
                Some(Box::new(move |v| {
                    let mut r = r.clone();
                    if v < 4 {
                        r.states_filter.clear();
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::FindCoordinator => {
                let mut r = FindCoordinatorRequest::default();
                r.coordinator_keys = two(s("g"));
                Some(Box::new(move |v| {
                    let mut r = r.clone();
                    if v < 4 {
                        r.coordinator_keys.clear();
                        r.key = s("g");
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::AddPartitionsToTxn => {
                let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
                t.name = topic("orders");
                t.partitions = vec![0, 1];
                let mut x = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
                x.transactional_id = TransactionalId(s("tx"));
                x.topics = two(t.clone());
                Some(Box::new(move |v| {
                    let mut r = AddPartitionsToTxnRequest::default();
                    if v >= 4 {
                        r.transactions = two(x.clone());
                    } else {
                        r.v3_and_below_transactional_id = TransactionalId(s("tx"));
                        r.v3_and_below_topics = two(t.clone());
                    }
                    encoded(&r, v)
                }))
            }
            ApiKey::TxnOffsetCommit => {
                let mut t = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
                t.name = topic("orders");
                t.partitions = two(Default::default());
                let mut r = TxnOffsetCommitRequest::default();
                r.transactional_id = TransactionalId(s("tx"));
                r.topics = two(t);
                at!(r)
            }
            ApiKey::SaslHandshake => {
                let mut r = SaslHandshakeRequest::default();
                r.mechanism = s("PLAIN");
                at!(r)
            }
            ApiKey::SaslAuthenticate => {
                let mut r = SaslAuthenticateRequest::default();
                r.auth_bytes = bytes::Bytes::from_static(b"\0alice\0alice-secret");
                at!(r)
            }
            _ => None,
        }
    }

    /// A default request of `api`: its scalar fields and empty arrays.
    fn default_body(api: ApiKey, version: i16) -> Option<Vec<u8>> {
        macro_rules! default_of {
            ($($key:ident => $ty:ty),* $(,)?) => {
                match api {
                    $(ApiKey::$key => encoded(&<$ty>::default(), version),)*
                    _ => None,
                }
            };
        }
        default_of!(
            Metadata => MetadataRequest, Produce => ProduceRequest, Fetch => FetchRequest,
            ListOffsets => ListOffsetsRequest,
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
            CreateTopics => CreateTopicsRequest, DeleteTopics => DeleteTopicsRequest,
            DeleteRecords => DeleteRecordsRequest, DescribeConfigs => DescribeConfigsRequest,
            AlterConfigs => AlterConfigsRequest, CreatePartitions => CreatePartitionsRequest,
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
            ApiVersions => ApiVersionsRequest, DescribeCluster => DescribeClusterRequest,
            FindCoordinator => FindCoordinatorRequest, JoinGroup => JoinGroupRequest,
            SyncGroup => SyncGroupRequest, Heartbeat => HeartbeatRequest,
            LeaveGroup => LeaveGroupRequest, OffsetCommit => OffsetCommitRequest,
            OffsetFetch => OffsetFetchRequest, ListGroups => ListGroupsRequest,
            DescribeGroups => DescribeGroupsRequest, DeleteGroups => DeleteGroupsRequest,
            InitProducerId => InitProducerIdRequest,
            AddPartitionsToTxn => AddPartitionsToTxnRequest,
            AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest,
            TxnOffsetCommit => TxnOffsetCommitRequest,
            SaslHandshake => SaslHandshakeRequest, SaslAuthenticate => SaslAuthenticateRequest,
        )
    }

    #[test]
    fn each_schema_walks_well_formed_requests_to_their_end() {
        let mut checked = 0;
        for api in ApiKey::iter().filter(|api| has_schema(*api)) {
            let valid = api.valid_versions();
            let populated = populated(api);
            let (mut defaults, mut populated_versions) = (0, 0);
            for version in valid.min..=valid.max {
                // `ApiKey::valid_versions` may name a version the message
                // itself does not encode yet (OffsetCommit v10): no request
                // of it decodes either.
                let Some(body) = default_body(api, version) else {
                    continue;
                };
                walks_exactly(api, version, &body);
                defaults += 1;
                // Some arrays exist only from some version: a populated
                // request encodes only where all of its fields do.
                if let Some(body) = populated.as_ref().and_then(|build| build(version)) {
                    walks_exactly(api, version, &body);
                    populated_versions += 1;
                }
            }
            if populated.is_some() {
                assert!(
                    populated_versions > 0,
                    "{api:?}: no populated request encodes"
                );
            }
            assert!(defaults > 0, "{api:?}: no default request walked");
            checked += defaults + populated_versions;
        }
        assert!(checked > 300, "{checked}");
    }

    #[test]
    fn absurd_counts_and_lengths_are_refused() {
        // Metadata v1: the topic array's count, then one byte.
        let mut body = i32::MAX.to_be_bytes().to_vec();
        body.push(0);
        assert!(check(ApiKey::Metadata, 1, &body).is_err());
        // Flexible (v9): a compact count of 2^31.
        let body = [0x80, 0x80, 0x80, 0x80, 0x08, 0];
        assert!(check(ApiKey::Metadata, 9, &body).is_err());
        // A negative count other than null.
        assert!(check(ApiKey::Metadata, 1, &(-2i32).to_be_bytes()).is_err());
        // Null is fine; so is a body that ends early (the decoder's call).
        assert!(check(ApiKey::Metadata, 1, &(-1i32).to_be_bytes()).is_ok());
        assert!(check(ApiKey::Metadata, 1, &[0, 0, 0, 1, 0]).is_ok());
        // One element with nothing left cannot be.
        assert!(check(ApiKey::Metadata, 1, &[0, 0, 0, 1]).is_err());
        // A nested count: Produce v3, one topic "t" whose partition array
        // claims a billion entries.
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&30_000i32.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.push(b't');
        body.extend_from_slice(&1_000_000_000i32.to_be_bytes());
        assert!(check(ApiKey::Produce, 3, &body).is_err());
    }
}
