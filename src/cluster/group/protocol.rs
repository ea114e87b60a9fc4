//! The consumer group protocol's data: what a member sends when it joins
//! ([`Subscription`]). It lives with the group coordinator, below the
//! clients, so that the cluster layer needs nothing from `client`; the
//! assignors (in the client layer) read it.

use bytes::Bytes;

use crate::types::TopicPartition;

/// One member's subscription as the assignor sees it: Kafka's
/// `ConsumerPartitionAssignor.Subscription`.
///
/// Build one with [`Subscription::new`] and the `with_*` methods:
///
/// ```
/// use logbus::{Subscription, TopicPartition};
///
/// let sub = Subscription::new(["orders", "payments"])
///     .with_owned_partitions([TopicPartition::new("orders", 0)])
///     .with_generation(3)
///     .with_group_instance_id("worker-1");
/// assert_eq!(sub.topics, ["orders", "payments"]);
/// assert_eq!(sub.generation, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Subscription {
    /// The topics the member subscribes to. Order and duplicates do not
    /// matter.
    pub topics: Vec<String>,
    /// The partitions the member owned in the generation it last took part
    /// in (Kafka's `ownedPartitions`).
    ///
    /// The sticky assignors read ownership from here for both protocols. With
    /// the eager [`StickyAssignor`](crate::StickyAssignor) a member has already revoked them when it
    /// rejoins; the coordinator still passes them in, as Kafka's
    /// `StickyAssignor` carries them in its user data.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which the member owned
    /// [`owned_partitions`](Self::owned_partitions); `None` if it never took
    /// part in one. When two members claim the same partition, the sticky
    /// assignors believe the one with the higher generation. Negative values
    /// count as `None`.
    pub generation: Option<i32>,
    /// Opaque bytes for a custom [`Assignor`](crate::Assignor) (Kafka's `userData`); the
    /// built-in assignors ignore it.
    pub user_data: Option<Bytes>,
    /// The member's `group.instance.id` if it is a static member. The range
    /// and round-robin assignors order static members by this id, ahead of
    /// dynamic members ordered by member id, so a static member that
    /// restarts under a new member id gets the same partitions.
    pub group_instance_id: Option<String>,
}

impl Subscription {
    /// A subscription to `topics` with no owned partitions, no generation,
    /// no user data and no group instance id.
    pub fn new<I, S>(topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Subscription::default()
        }
    }

    /// Sets [`owned_partitions`](Self::owned_partitions).
    #[must_use]
    pub fn with_owned_partitions(
        mut self,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Self {
        self.owned_partitions = partitions.into_iter().collect();
        self
    }

    /// Sets [`generation`](Self::generation).
    #[must_use]
    pub fn with_generation(mut self, generation: i32) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Sets [`user_data`](Self::user_data).
    #[must_use]
    pub fn with_user_data(mut self, user_data: impl Into<Bytes>) -> Self {
        self.user_data = Some(user_data.into());
        self
    }

    /// Sets [`group_instance_id`](Self::group_instance_id), making the
    /// member static.
    #[must_use]
    pub fn with_group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Whether the member subscribes to `topic`.
    #[must_use]
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }

    /// The generation, with negative values read as "none".
    pub(crate) fn valid_generation(&self) -> Option<i32> {
        self.generation.filter(|g| *g >= 0)
    }
}
