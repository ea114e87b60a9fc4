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
//! An API without a schema here is decoded unchecked (the coordinators'
//! APIs until their schemas are added to [`schema`]).

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
        _ => return None,
    })
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
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn encoded(message: &impl Encodable, version: i16) -> Vec<u8> {
        let mut out = BytesMut::new();
        message.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    #[test]
    fn well_formed_requests_pass_at_every_version() {
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str("orders")));
        let mut metadata = MetadataRequest::default();
        metadata.topics = Some(vec![topic.clone(), topic]);
        for version in 0..=12 {
            let body = encoded(&metadata, version);
            assert!(
                check(ApiKey::Metadata, version, &body).is_ok(),
                "v{version}"
            );
        }
        let mut data = PartitionProduceData::default();
        data.records = Some(bytes::Bytes::from_static(&[1, 2, 3]));
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_static_str("orders"));
        t.partition_data = vec![data.clone(), data];
        let mut produce = ProduceRequest::default();
        produce.topic_data = vec![t];
        for version in 3..=9 {
            let body = encoded(&produce, version);
            let mut walk = Walk {
                buf: &body,
                pos: 0,
                version,
                flexible: version >= PRODUCE.flexible_from,
            };
            assert!(walk.structure(PRODUCE.fields).is_ok(), "v{version}");
            assert_eq!(
                walk.pos,
                body.len(),
                "v{version}: the walk ends with the body"
            );
        }
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
