//! Weighted choice of a rule's backend: a pure function of the weights and
//! a random number the caller draws, so that tests can pick the number.

use super::config::WeightedBackend;

/// The backend a request drawn with the uniformly random `random` goes to:
/// each backend gets `weight / total weight` of all `u32` values (up to
/// rounding), and a backend of weight zero none. `None` when there is no
/// backend with a weight above zero, which the Gateway API answers with
/// 500.
///
/// A chosen [`Backend::Invalid`](super::config::Backend::Invalid) is the
/// share of traffic that must also get 500.
pub fn choose_backend(backends: &[WeightedBackend], random: u32) -> Option<&WeightedBackend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    // Scale `random` onto [0, total) without modulo bias; a u32 times a
    // u64 fits in a u128, and the result is below `total`, so in a u64.
    let mut point = ((u128::from(random) * u128::from(total)) >> 32) as u64;
    for backend in backends {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(backend);
        }
        point -= weight;
    }
    // Unreachable: `point < total`, the sum of the weights walked above.
    None
}

#[cfg(test)]
mod tests;
