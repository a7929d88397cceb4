//! Weighted choice over evenly spread random numbers, so the shares are
//! exact rather than statistical.

use super::*;
use crate::route::{Backend, ServiceKey};
use crate::testing::spread;

fn backend(name: &str, weight: u32) -> WeightedBackend {
    WeightedBackend {
        backend: Backend::Service(ServiceKey {
            hostname: name.into(),
            port: 9080,
        }),
        weight,
        filters: Vec::new(),
    }
}

fn name(chosen: Option<&WeightedBackend>) -> Option<&str> {
    match &chosen?.backend {
        Backend::Service(service) => Some(&service.hostname),
        Backend::Invalid { reason } => Some(reason),
    }
}

/// How many of `samples` evenly spread `u32` values go to each backend.
fn shares(backends: &[WeightedBackend], samples: u32) -> Vec<u32> {
    let mut counts = vec![0; backends.len()];
    for i in 0..samples {
        let chosen = choose_backend(backends, spread(i, samples)).unwrap();
        let index = backends
            .iter()
            .position(|b| std::ptr::eq(b, chosen))
            .unwrap();
        counts[index] += 1;
    }
    counts
}

#[test]
fn one_backend_takes_everything() {
    let backends = [backend("v1", 1)];
    for random in [0, 1, u32::MAX / 2, u32::MAX] {
        assert_eq!(name(choose_backend(&backends, random)), Some("v1"));
    }
}

#[test]
fn weights_split_traffic_in_proportion() {
    assert_eq!(
        shares(&[backend("v1", 90), backend("v2", 10)], 1000),
        vec![900, 100]
    );
    assert_eq!(
        shares(&[backend("a", 1), backend("b", 2), backend("c", 1)], 1000),
        vec![250, 500, 250]
    );
}

#[test]
fn the_ends_of_the_range_go_to_the_first_and_last_backends() {
    let backends = [backend("v1", 50), backend("v2", 50)];
    assert_eq!(name(choose_backend(&backends, 0)), Some("v1"));
    assert_eq!(name(choose_backend(&backends, u32::MAX / 2)), Some("v1"));
    assert_eq!(
        name(choose_backend(&backends, u32::MAX / 2 + 1)),
        Some("v2")
    );
    assert_eq!(name(choose_backend(&backends, u32::MAX)), Some("v2"));
}

#[test]
fn a_zero_weight_gets_no_traffic() {
    let backends = [
        backend("off", 0),
        backend("v1", 1),
        backend("off", 0),
        backend("v2", 1),
    ];
    assert_eq!(shares(&backends, 1000), vec![0, 500, 0, 500]);
    assert_eq!(name(choose_backend(&backends, 0)), Some("v1"));
    assert_eq!(name(choose_backend(&backends, u32::MAX)), Some("v2"));
}

#[test]
fn no_backend_with_weight_means_none() {
    assert!(choose_backend(&[], 7).is_none());
    assert!(choose_backend(&[backend("v1", 0), backend("v2", 0)], 7).is_none());
}

#[test]
fn large_weights_do_not_overflow() {
    let backends = [backend("v1", u32::MAX), backend("v2", u32::MAX)];
    assert_eq!(name(choose_backend(&backends, u32::MAX)), Some("v2"));
    assert_eq!(shares(&backends, 1000), vec![500, 500]);
}

#[test]
fn an_invalid_backend_keeps_its_share() {
    let backends = [
        backend("v1", 1),
        WeightedBackend {
            backend: Backend::Invalid {
                reason: "service v9 not found".into(),
            },
            weight: 1,
            filters: Vec::new(),
        },
    ];
    assert_eq!(shares(&backends, 1000), vec![500, 500]);
    assert_eq!(
        name(choose_backend(&backends, u32::MAX)),
        Some("service v9 not found")
    );
}
