//! Which requests are traced. A caller that sent a valid `traceparent`
//! decided already: its sampled flag is honoured either way, so a trace
//! is recorded whole or not at all. A request without one is sampled
//! with the configured probability, Istio's `PILOT_TRACE_SAMPLING`
//! (a percentage, 1 by default). Pure: the dice roll is passed in.

use std::fmt;
use std::str::FromStr;

use super::context::TraceParent;

/// A sampling percentage, 0 to 100 (fractions allowed, as Istio's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingPercent(f64);

/// Why a sampling setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a percentage from 0 to 100 (e.g. 1, 0.5 or 100)")]
pub struct SamplingError(String);

// === impl SamplingPercent ===

impl SamplingPercent {
    /// Istio's default (`PILOT_TRACE_SAMPLING`): 1%.
    pub const DEFAULT: SamplingPercent = SamplingPercent(1.0);

    pub fn new(percent: f64) -> Result<Self, SamplingError> {
        if (0.0..=100.0).contains(&percent) {
            Ok(SamplingPercent(percent))
        } else {
            Err(SamplingError(percent.to_string()))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for SamplingPercent {
    type Err = SamplingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let percent = text
            .trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .map_err(|_| SamplingError(text.to_owned()))?;
        SamplingPercent::new(percent).map_err(|_| SamplingError(text.to_owned()))
    }
}

impl fmt::Display for SamplingPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether to record this request's trace: the parent's decision, or a
/// roll (`roll` in [0, 1)) against `percent`.
pub(crate) fn sampled(parent: Option<&TraceParent>, percent: SamplingPercent, roll: f64) -> bool {
    match parent {
        Some(parent) => parent.sampled(),
        None => roll * 100.0 < percent.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(flags: u8) -> TraceParent {
        TraceParent {
            trace_id: [1; 16],
            parent_id: [2; 8],
            flags,
        }
    }

    #[test]
    fn a_parents_decision_is_honoured_whatever_the_percentage() {
        let none = SamplingPercent::new(0.0).unwrap();
        let all = SamplingPercent::new(100.0).unwrap();
        assert!(sampled(Some(&parent(1)), none, 0.99));
        assert!(!sampled(Some(&parent(0)), all, 0.0));
    }

    #[test]
    fn without_a_parent_the_percentage_decides() {
        let one = SamplingPercent::DEFAULT;
        assert!(sampled(None, one, 0.0));
        assert!(sampled(None, one, 0.009_9));
        assert!(!sampled(None, one, 0.01));
        let all = SamplingPercent::new(100.0).unwrap();
        assert!(sampled(None, all, 0.999_999));
        let none = SamplingPercent::new(0.0).unwrap();
        assert!(!sampled(None, none, 0.0));
    }

    #[test]
    fn settings_parse_as_percentages_and_bad_ones_say_so() {
        assert_eq!("1".parse::<SamplingPercent>().unwrap().get(), 1.0);
        assert_eq!("0.5".parse::<SamplingPercent>().unwrap().get(), 0.5);
        assert_eq!("100%".parse::<SamplingPercent>().unwrap().get(), 100.0);
        for bad in ["101", "-1", "NaN", "all", ""] {
            let error = bad.parse::<SamplingPercent>().unwrap_err().to_string();
            assert!(error.contains("from 0 to 100"), "{bad}: {error}");
        }
    }
}
