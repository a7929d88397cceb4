//! Circuit breaking on a service's upstream connections: the
//! `DestinationRule` `connectionPool` limits `tcp.maxConnections`,
//! `http.http1MaxPendingRequests` and `http.maxRequestsPerConnection` as
//! pure decisions over counts. The pool that keeps the counts, the free
//! connections and the waiting requests is `proxy::pool`;
//! `http.http2MaxRequests` is checked earlier, when the endpoint is chosen
//! (`proxy::load`).
//!
//! The semantics are Envoy's, whose circuit breakers Istio configures:
//! connections are counted per service (an Envoy cluster), over all its
//! endpoints, from the moment one is opened until it has closed. A request
//! that finds no free connection opens one while the count is under
//! `maxConnections`, and waits for one to come free when it is not; when
//! `http1MaxPendingRequests` requests wait already, it is refused (503
//! `UO`). As in Envoy, an endpoint without any connection may always open
//! one, so that its requests never wait for a connection that cannot come
//! (the count can then pass `maxConnections` by up to one per endpoint).
//! Unlike Envoy, a request opening its own connection is not counted as
//! waiting: only those the connection limit holds back are.
//!
//! A TCP passthrough takes a connection of the service's count too, for
//! its whole life, so that HTTP and TCP share `maxConnections` as they
//! share an Envoy cluster's circuit breaker. As Envoy's TCP proxy, it
//! opens one only under the limit, with no exception for an endpoint
//! without connections, and never waits: at the limit it is refused
//! (`UO`) and closed ([`may_pass_through`]).
//!
//! `http.idleTimeout` closes an HTTP connection that has carried no
//! request for that long ([`idle_expired`]); the pool keeps the clocks.

use std::time::Duration;

use tokio::time::Instant;

use crate::balance::Limits;

/// What the pool holds of a service when a request finds no free
/// connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Connections open or being opened to any endpoint of the service.
    pub service: u32,
    /// Of those, the ones the request could use: to its endpoint, with
    /// its HTTP version, driven by its worker thread.
    pub endpoint: u32,
    /// Requests of the service waiting for a connection.
    pub waiting: u32,
}

/// What a request that finds no free connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Opens a connection of its own.
    Open,
    /// Waits, in line, for a connection to come free or for room to open
    /// one.
    Wait,
    /// Is refused: 503 with Envoy's upstream overflow flag (`UO`).
    Overflow,
}

/// Whether a request that found no free connection opens one, waits or
/// is refused.
pub fn admit(limits: &Limits, counts: ConnectionCounts) -> Admission {
    if may_open(limits, counts) {
        Admission::Open
    } else if limits
        .max_pending_requests
        .is_none_or(|max| counts.waiting < max)
    {
        Admission::Wait
    } else {
        Admission::Overflow
    }
}

/// Whether a connection may be opened: the service is under
/// `maxConnections`, or the endpoint has none at all that the request
/// could use (Envoy's rule, per worker: a request is never left waiting
/// for a connection that nobody will open).
pub fn may_open(limits: &Limits, counts: ConnectionCounts) -> bool {
    counts.endpoint == 0
        || limits
            .max_connections
            .is_none_or(|max| counts.service < max)
}

/// Whether a TCP passthrough may open its upstream connection while the
/// service has `open` connections (HTTP and TCP, open or being opened).
pub fn may_pass_through(limits: &Limits, open: u32) -> bool {
    limits.max_connections.is_none_or(|max| open < max)
}

/// Whether a connection that has carried `requests` may carry another
/// (`maxRequestsPerConnection`; 1 turns keep-alive off).
pub fn reusable(limits: &Limits, requests: u32) -> bool {
    limits
        .max_requests_per_connection
        .is_none_or(|max| requests < max)
}

/// Whether a connection idle since `idle_since` is to be closed at `now`
/// by `idle_timeout` (`None`: never).
pub fn idle_expired(idle_timeout: Option<Duration>, idle_since: Instant, now: Instant) -> bool {
    idle_timeout.is_some_and(|timeout| now.saturating_duration_since(idle_since) >= timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: Option<u32>, pending: Option<u32>) -> Limits {
        Limits {
            max_connections: connections,
            max_pending_requests: pending,
            ..Limits::default()
        }
    }

    fn counts(service: u32, endpoint: u32, waiting: u32) -> ConnectionCounts {
        ConnectionCounts {
            service,
            endpoint,
            waiting,
        }
    }

    #[test]
    fn without_limits_a_request_always_opens_a_connection() {
        let none = Limits::default();
        assert_eq!(admit(&none, counts(1000, 1000, 1000)), Admission::Open);
        assert!(reusable(&none, u32::MAX - 1));
    }

    #[test]
    fn under_max_connections_a_request_opens_one() {
        let one = limits(Some(2), Some(1));
        assert_eq!(admit(&one, counts(1, 1, 0)), Admission::Open);
    }

    #[test]
    fn at_max_connections_a_request_waits_until_the_line_is_full() {
        let one = limits(Some(1), Some(2));
        assert_eq!(admit(&one, counts(1, 1, 0)), Admission::Wait);
        assert_eq!(admit(&one, counts(1, 1, 1)), Admission::Wait);
        assert_eq!(admit(&one, counts(1, 1, 2)), Admission::Overflow);
    }

    #[test]
    fn without_a_pending_limit_the_line_is_unbounded() {
        let one = limits(Some(1), None);
        assert_eq!(admit(&one, counts(1, 1, 100_000)), Admission::Wait);
    }

    #[test]
    fn the_pending_limit_alone_queues_nothing() {
        // Without a connection limit nobody waits, so the line stays empty.
        let pending = limits(None, Some(1));
        assert_eq!(admit(&pending, counts(50, 50, 0)), Admission::Open);
    }

    #[test]
    fn an_endpoint_without_connections_may_open_one_over_the_limit() {
        // Another endpoint holds the service's only connection.
        let one = limits(Some(1), Some(1));
        assert_eq!(admit(&one, counts(1, 0, 1)), Admission::Open);
        assert!(may_open(&one, counts(3, 0, 0)));
        assert!(!may_open(&one, counts(1, 1, 0)));
    }

    #[test]
    fn a_passthrough_opens_only_under_max_connections() {
        let one = limits(Some(1), Some(10));
        assert!(may_pass_through(&one, 0));
        assert!(!may_pass_through(&one, 1));
        assert!(!may_pass_through(&one, 2));
        assert!(may_pass_through(&Limits::default(), 100_000));
        // The pending limit is no line for TCP.
        assert!(!may_pass_through(&limits(Some(2), None), 2));
    }

    #[test]
    fn a_connection_is_reused_until_it_has_carried_max_requests() {
        let two = Limits {
            max_requests_per_connection: Some(2),
            ..Limits::default()
        };
        assert!(reusable(&two, 1));
        assert!(!reusable(&two, 2));
        let keep_alive_off = Limits {
            max_requests_per_connection: Some(1),
            ..Limits::default()
        };
        assert!(!reusable(&keep_alive_off, 1));
    }

    #[test]
    fn a_connection_expires_once_idle_for_the_timeout() {
        let since = Instant::now();
        let second = Some(Duration::from_secs(1));
        assert!(!idle_expired(second, since, since));
        assert!(!idle_expired(
            second,
            since,
            since + Duration::from_millis(999)
        ));
        assert!(idle_expired(second, since, since + Duration::from_secs(1)));
        // A clock that went back (a reuse recorded later) is not expired.
        assert!(!idle_expired(second, since + Duration::from_secs(5), since));
    }

    #[test]
    fn without_an_idle_timeout_a_connection_never_expires() {
        let since = Instant::now();
        let later = since + Duration::from_secs(365 * 24 * 3600);
        assert!(!idle_expired(None, since, later));
        assert_eq!(
            Limits::default().idle_timeout,
            Some(Duration::from_secs(3600)),
            "Istio's default"
        );
    }
}
