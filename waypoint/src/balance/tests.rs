use super::*;

fn draw(first: u32, second: u32) -> Draw {
    Draw {
        first,
        second,
        round_robin: 0,
    }
}

#[test]
fn no_candidate_is_no_choice_and_one_is_always_it() {
    for policy in [
        LoadBalancer::LeastRequest,
        LoadBalancer::RoundRobin,
        LoadBalancer::Random,
    ] {
        assert_eq!(pick(policy, &[], draw(0, 0)), None);
        assert_eq!(pick(policy, &[7], draw(u32::MAX, u32::MAX)), Some(0));
    }
}

#[test]
fn least_request_takes_the_less_loaded_of_two_distinct_draws() {
    // Draws scale onto 0..n: 0 is the first candidate, u32::MAX the last.
    let loads = [5, 0, 3];
    // First draw 0 (load 5), second over the other two: 0 -> index 1.
    assert_eq!(
        pick(LoadBalancer::LeastRequest, &loads, draw(0, 0)),
        Some(1)
    );
    // First draw 2 (load 3), second 0 -> index 0 (load 5): keep 2.
    assert_eq!(
        pick(LoadBalancer::LeastRequest, &loads, draw(u32::MAX, 0)),
        Some(2)
    );
    // The same draw twice still compares two different candidates.
    let busy_first = [9, 1];
    assert_eq!(
        pick(LoadBalancer::LeastRequest, &busy_first, draw(0, 0)),
        Some(1)
    );
    // A tie keeps the first draw.
    assert_eq!(
        pick(LoadBalancer::LeastRequest, &[2, 2], draw(u32::MAX, 0)),
        Some(1)
    );
}

#[test]
fn least_request_never_picks_the_busiest_of_many() {
    // With distinct draws, the most loaded candidate always loses.
    let loads = [1, 2, 3, 100];
    for first in (0..=u32::MAX).step_by(1 << 28) {
        for second in (0..=u32::MAX).step_by(1 << 28) {
            let chosen = pick(LoadBalancer::LeastRequest, &loads, draw(first, second));
            assert_ne!(chosen, Some(3), "draws {first} {second}");
        }
    }
}

#[test]
fn round_robin_follows_the_position_and_random_the_draw() {
    let loads = [0, 0, 0];
    let at = |round_robin| Draw {
        first: 0,
        second: 0,
        round_robin,
    };
    let picks: Vec<_> = (0..6)
        .map(|i| pick(LoadBalancer::RoundRobin, &loads, at(i)))
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    assert_eq!(pick(LoadBalancer::Random, &loads, draw(0, 0)), Some(0));
    assert_eq!(
        pick(LoadBalancer::Random, &loads, draw(u32::MAX / 2, 0)),
        Some(1)
    );
    assert_eq!(
        pick(LoadBalancer::Random, &loads, draw(u32::MAX, 0)),
        Some(2)
    );
}
