//! The hash map of the request path. Its keys (service hostnames,
//! endpoint addresses) come from the control plane, not from requests, so
//! the flooding resistance of std's SipHash buys nothing here, and SipHash
//! was about 1,900 of a request's 116,000 instructions (callgrind): the
//! lookups in the connection pool, the load balancer, the retry budgets,
//! outlier health and the config snapshot (the metrics' series map, keyed
//! by label sets, was already on foldhash). foldhash is seeded per process.

/// A `HashMap` with foldhash's fast hasher; build it with `default()`.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
