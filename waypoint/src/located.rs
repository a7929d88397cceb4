//! A problem with a field of a pushed resource, and the way down to it:
//! `HTTPRoute shop/catalog rule 2 filter 1 set 0: header name ...`. Shared
//! by the conversions of every waypoint resource, each with its own
//! `Problem` type; each level of a conversion prefixes its step with
//! [`Located::at`] as the error travels out.

use std::fmt;

/// `problem`, found at `location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<P> {
    /// The way down to the field, outermost first; empty for a field of
    /// the resource itself.
    pub location: String,
    pub problem: P,
}

// === impl Located ===

impl<P> Located<P> {
    /// The same problem, one level further out: `step` goes in front of
    /// the location.
    pub(crate) fn at(mut self, step: impl fmt::Display) -> Self {
        self.location = if self.location.is_empty() {
            step.to_string()
        } else {
            format!("{step} {}", self.location)
        };
        self
    }
}

impl<P> From<P> for Located<P> {
    fn from(problem: P) -> Self {
        Located {
            location: String::new(),
            problem,
        }
    }
}

impl<P: fmt::Display> fmt::Display for Located<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.location, self.problem)
        }
    }
}

impl<P: fmt::Debug + fmt::Display> std::error::Error for Located<P> {}
