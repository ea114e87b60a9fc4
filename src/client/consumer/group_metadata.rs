//! [`ConsumerGroupMetadata`]: a consumer's place in its group, for
//! offsets committed in a transaction (Kafka's KIP-447).

/// A consumer's group id, generation and member id, as
/// [`Consumer::group_metadata`](crate::Consumer::group_metadata) returns
/// them (Kafka's `ConsumerGroupMetadata`). Given to
/// [`Producer::send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction),
/// it lets the group coordinator refuse offsets from a member that is no
/// longer in the group or whose generation ended in a rebalance (its
/// partitions may belong to another member now), so a zombie consumer
/// cannot commit offsets for input it lost, whatever its producer's
/// `transactional.id`.
///
/// A bare group id (`"etl"`, [`ConsumerGroupMetadata::new`]) carries no
/// generation: the offsets are then accepted without that check, as
/// Kafka's `sendOffsetsToTransaction(offsets, groupId)` does.
///
/// ```
/// use logbus::ConsumerGroupMetadata;
/// let bare = ConsumerGroupMetadata::from("etl");
/// assert_eq!((bare.group_id(), bare.generation_id(), bare.member_id()), ("etl", -1, ""));
/// let member = ConsumerGroupMetadata::new("etl").with_member(3, "consumer-1-7f2c");
/// assert_eq!(member.generation_id(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    group_id: String,
    generation_id: i32,
    member_id: String,
    group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// A bare group id: generation -1, no member id (no generation check).
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }

    /// This metadata for the member `member_id` in generation
    /// `generation_id`.
    #[must_use]
    pub fn with_member(mut self, generation_id: i32, member_id: impl Into<String>) -> Self {
        self.generation_id = generation_id;
        self.member_id = member_id.into();
        self
    }

    /// This metadata with the member's `group.instance.id`.
    #[must_use]
    pub fn with_group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// The `group.id`.
    #[must_use]
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The generation the member was in; -1 when unknown.
    #[must_use]
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// The member id; empty when unknown.
    #[must_use]
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The member's `group.instance.id`, for a static member.
    #[must_use]
    pub fn group_instance_id(&self) -> Option<&str> {
        self.group_instance_id.as_deref()
    }

    /// The member and generation the coordinator checks, if known.
    pub(crate) fn member(&self) -> Option<(&str, i32)> {
        (self.generation_id >= 0 && !self.member_id.is_empty())
            .then_some((self.member_id.as_str(), self.generation_id))
    }
}

impl From<&str> for ConsumerGroupMetadata {
    fn from(group_id: &str) -> Self {
        ConsumerGroupMetadata::new(group_id)
    }
}

impl From<String> for ConsumerGroupMetadata {
    fn from(group_id: String) -> Self {
        ConsumerGroupMetadata::new(group_id)
    }
}

impl From<&ConsumerGroupMetadata> for ConsumerGroupMetadata {
    fn from(metadata: &ConsumerGroupMetadata) -> Self {
        metadata.clone()
    }
}
