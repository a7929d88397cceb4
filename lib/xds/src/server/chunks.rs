//! Splitting a push into responses of bounded size, and the wire form of a
//! resource.
//!
//! tonic encodes each response into a per-stream buffer that grows to the
//! largest message of the stream and keeps that allocation for the life of
//! the stream; a client's first response for a mesh of 10,000 workloads is a
//! few MiB, so unbounded responses cost that much per client for good.
//! Bounding what one response carries bounds the buffer.

use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use prost::encoding::encoded_len_varint;
use proto::discovery::Resource;

use crate::store::StoredResource;

/// Splits a push into consecutive ranges of `upserts`, one per response,
/// whose [`wire_len`]s add up to at most `budget` bytes each; the last
/// response also carries the removals, `removal_bytes` of them (see
/// [`removals_len`]). Every response holds at least one resource or the
/// removals: a resource larger than the budget goes out alone. Always
/// returns at least one range (empty when there are no upserts, for the
/// removals or for an empty first response); the last may be empty when the
/// removals did not fit beside the resources.
pub(super) fn split(
    upserts: &[Arc<StoredResource>],
    removal_bytes: usize,
    budget: usize,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, resource) in upserts.iter().enumerate() {
        let len = wire_len(resource);
        if index > start && bytes + len > budget {
            ranges.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += len;
    }
    if removal_bytes > 0 && start < upserts.len() && bytes + removal_bytes > budget {
        ranges.push(start..upserts.len());
        start = upserts.len();
    }
    ranges.push(start..upserts.len());
    ranges
}

/// Encoded size of `removals` as a response's `removed_resources`.
pub(super) fn removals_len(removals: &[Arc<str>]) -> usize {
    removals.iter().map(|name| field(name.len())).sum()
}

/// Encoded size of a length-delimited field of `len` bytes. Every field
/// involved has a number below 16, so a one-byte key.
fn field(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Encoded size of `resource` as an entry of a `DeltaDiscoveryResponse`'s
/// `resources`: what [`to_wire`] makes of it, with its field key and length.
pub(super) fn wire_len(resource: &StoredResource) -> usize {
    field(
        field(resource.version.len())
            + field(resource.body.encoded_len())
            + field(resource.name.len()),
    )
}

/// The wire form of a stored resource. Copies the body: the message owns it.
pub(super) fn to_wire(resource: &StoredResource) -> Resource {
    Resource {
        version: resource.version.to_string(),
        resource: Some(resource.body.clone()),
        name: resource.name.to_string(),
        aliases: Vec::new(),
        ttl: None,
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Any;

    use super::*;

    fn resource(name: &str, body_len: usize) -> Arc<StoredResource> {
        Arc::new(StoredResource {
            name: Arc::from(name),
            version: Arc::from("0123456789abcdef"),
            body: Any {
                type_url: "type.googleapis.com/test.Thing".into(),
                value: vec![7; body_len],
            },
        })
    }

    #[test]
    fn wire_len_is_the_encoded_entry() {
        for body_len in [0, 1, 100, 300, 70_000] {
            let stored = resource("some/name", body_len);
            let expected = prost::encoding::message::encoded_len(2, &to_wire(&stored));
            assert_eq!(wire_len(&stored), expected, "body of {body_len} bytes");
        }
    }

    #[test]
    fn ranges_cover_everything_within_the_budget() {
        let upserts: Vec<_> = (0..50)
            .map(|i| resource(&format!("r{i}"), 10 + i * 7))
            .collect();
        let budget = 1000;
        let ranges = split(&upserts, 0, budget);
        assert!(ranges.len() > 1);
        let mut next = 0;
        for range in &ranges {
            assert_eq!(range.start, next, "ranges are consecutive");
            assert!(!range.is_empty());
            let bytes: usize = upserts[range.clone()].iter().map(|r| wire_len(r)).sum();
            assert!(bytes <= budget, "{range:?} holds {bytes} bytes");
            next = range.end;
        }
        assert_eq!(next, upserts.len());
    }

    #[test]
    fn oversized_resources_go_alone_and_nothing_still_makes_one_response() {
        let upserts = vec![resource("a", 10), resource("huge", 5000), resource("b", 10)];
        assert_eq!(split(&upserts, 0, 1000), vec![0..1, 1..2, 2..3]);
        assert_eq!(split(&upserts, 0, usize::MAX), vec![0..3]);
        assert_eq!(split(&[], 0, 1000), vec![0..0]);
        // A zero budget still sends one resource per response.
        assert_eq!(split(&upserts[..2], 0, 0), vec![0..1, 1..2]);
    }

    #[test]
    fn removals_count_against_the_last_response() {
        let upserts = vec![resource("a", 10), resource("b", 10)];
        let names: Vec<Arc<str>> = vec![Arc::from("gone"), Arc::from("also-gone")];
        let removal_bytes = removals_len(&names);
        let wire_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let response = proto::discovery::DeltaDiscoveryResponse {
            removed_resources: wire_names,
            ..Default::default()
        };
        assert_eq!(removal_bytes, response.encoded_len());

        let both = wire_len(&upserts[0]) + wire_len(&upserts[1]);
        assert_eq!(
            split(&upserts, removal_bytes, both + removal_bytes),
            vec![0..2]
        );
        // No room beside the resources: the removals go alone, last.
        assert_eq!(split(&upserts, removal_bytes, both), vec![0..2, 2..2]);
        assert_eq!(split(&[], removal_bytes, 1), vec![0..0]);
    }
}
