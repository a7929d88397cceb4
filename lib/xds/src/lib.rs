//! Delta ADS client and server plumbing, generic over resource types.
//!
//! Empty until the istiod-lite issue lands: the control plane and the proxies
//! will share their delta xDS bookkeeping (versions, nonces, ACK/NACK) here.
//! This crate must never know what a workload or a route is.
