//! One HTTP request through the waypoint, phase by phase (see the module
//! doc of `proxy`). Every decision is a pure function of the config
//! snapshot and the request (`route`, `filter`, `authz`); this module
//! strings them together and answers when one says no (`local_reply`:
//! plain HTTP, or a trailers-only gRPC status for a gRPC request).

mod local_reply;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use identity::Identity;
use tracing::{debug, info};
use workload::{Service, State, Workload};

use self::local_reply::{LocalReply, ReplyForm, local};
use super::Inner;
use super::access_log::{Counted, Logged, RequestLog, ResponseBody, strip_hop_by_hop};
use super::attempts::{Exchange, Limit, Outcome, Replay, rebuild};
use super::body::{Buffered, UpstreamBody, buffer};
use super::upgrade::{self, Asked, Handoff, Requested};
use crate::authz::{self, L7Request, Verdict};
use crate::fault::{FaultRequest, Rolls};
use crate::filter;
use crate::metrics::{ResponseFlag, grpc_status};
use crate::normalize::normalize_path;
use crate::retry::REPLAY_BUFFER_LIMIT;
use crate::route::{
    Backend, Filter, HeaderModifier, RequestHead, RequestMirror, Retry, Rule, Selection,
    ServiceKey, Timeouts, choose_backend,
};
use crate::snapshot::WaypointConfig;

/// The tunnel a request came on.
#[derive(Debug)]
pub(crate) struct Downstream {
    /// Proven by the client certificate of the HBONE connection.
    pub(crate) peer_identity: Identity,
    /// `peer_identity` as a string, made once per tunnel for the access
    /// log and the metrics of each of its requests.
    pub(crate) peer_principal: Arc<str>,
    pub(crate) peer_addr: SocketAddr,
    /// The workload at `peer_addr`, if the mesh knows it.
    pub(crate) source: Option<Arc<Workload>>,
    /// The service whose VIP the tunnel named, and the port.
    pub(crate) service: Arc<Service>,
    pub(crate) port: u16,
    /// What hyper hands the connection to when it ends: the stream of an
    /// upgrade answered 101, for the tunnel to run, or an upgrade not
    /// switched, for the tunnel to close (see `upgrade`).
    pub(crate) upgrade: Handoff,
}

/// Where a request goes, how long it may take and how it is retried.
struct Target {
    service: Arc<Service>,
    port: u16,
    /// The matched rule's `timeouts` (none without a rule).
    timeouts: Timeouts,
    /// The matched rule's `retry` (none without a rule: one attempt).
    retry: Option<Retry>,
}

/// What the filters leave for later: header modifiers for the response,
/// and the mirrors this request rolled for, sent once its body is read.
#[derive(Default)]
struct Deferred {
    response_filters: Vec<HeaderModifier>,
    mirrors: Vec<RequestMirror>,
}

// === impl Inner ===

impl Inner {
    pub(super) async fn handle(
        &self,
        downstream: &Downstream,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let asked = upgrade::asked(request.version(), request.headers());
        let upgrade = match &asked {
            Asked::WebSocket(protocol) => Some(Requested::take(
                &mut request,
                protocol.clone(),
                &downstream.upgrade,
            )),
            Asked::Nothing | Asked::Unsupported(_) => {
                downstream.upgrade.keep_unswitched(&mut request);
                None
            }
        };
        let (mut parts, body) = request.into_parts();
        let trace = crate::trace::begin(
            self.tracer.as_ref(),
            &mut parts,
            &downstream.service,
            downstream.port,
        );
        // Before any filter edits the headers: the client's own.
        let form = ReplyForm::of(&parts.headers);
        let normalized = normalize_request_path(&mut parts);
        let mut log = RequestLog::new(downstream, &parts, self.metrics.clone());
        log.trace = trace;
        if let Err(reply) = normalized {
            return local(reply, form, log);
        }
        // Before policy, as Envoy refuses an upgrade no route allows.
        if let Asked::Unsupported(protocol) = asked {
            let reply = LocalReply::new(
                StatusCode::FORBIDDEN,
                "",
                format!("upgrade to {protocol:?} refused: only websocket is served"),
            );
            return upgrade::refused(local(reply, form, log));
        }
        let config = self.config.snapshot();
        let state = self.mesh.snapshot();
        if let Err(reply) = authorize(downstream, &config, &parts) {
            return local(reply, form, log);
        }
        if let Err(reply) = inject_fault(downstream, &config, &parts, &mut log).await {
            return local(reply, form, log);
        }
        let mut deferred = Deferred::default();
        let prepared = self.prepare(
            downstream,
            &config,
            &state,
            &mut parts,
            &mut log,
            &mut deferred,
        );
        let Target {
            service,
            port,
            timeouts,
            retry,
        } = match prepared {
            Ok(target) => target,
            Err(reply) => return local(reply, form, log),
        };
        log.backend = Some(service.clone());
        prepare_upstream_head(&mut parts, &service, port);
        self.retry_budgets
            .record_request(&service.hostname, std::time::Instant::now());
        let body = Counted::new(body, log.bytes_received.clone());
        if let Some(upgrade) = upgrade {
            // One attempt: what follows a 101 is a stream, which cannot be
            // replayed to a retry or a mirror.
            upgrade.restore_headers(&mut parts.headers);
            let request = Request::from_parts(parts, UpstreamBody::streamed_whole(body));
            let exchange = self
                .attempt_once(&state, &service, port, request, timeouts.single_attempt())
                .await;
            let filters = deferred.response_filters;
            return respond(exchange, &service, port, filters, form, log, Some(upgrade));
        }
        let retry = retry.filter(|r| r.attempts > 0);
        let exchange = match retry {
            None if deferred.mirrors.is_empty() => {
                let request = Request::from_parts(parts, UpstreamBody::streamed_whole(body));
                self.attempt_once(&state, &service, port, request, timeouts.single_attempt())
                    .await
            }
            // Retries and mirrors both send the body more than once.
            retry => match buffer(body, REPLAY_BUFFER_LIMIT).await {
                Err(error) => {
                    let reply = LocalReply::new(
                        StatusCode::BAD_REQUEST,
                        "request body failed\n",
                        format!("reading the request body failed: {error}"),
                    );
                    return local(reply, form, log);
                }
                // Kept, so replayable whatever the method (see
                // `retry::is_replayable`).
                Ok(Buffered::Kept(kept)) => {
                    let deadline = timeouts.single_attempt();
                    self.mirror(&state, &deferred.mirrors, &parts, &kept, deadline);
                    match retry {
                        Some(retry) => {
                            let replay = Replay {
                                head: &parts,
                                body: kept,
                                retry: &retry,
                                timeouts,
                            };
                            self.attempt_with_retries(&state, &service, port, replay)
                                .await
                        }
                        None => {
                            let request = rebuild(&parts, &kept);
                            self.attempt_once(&state, &service, port, request, deadline)
                                .await
                        }
                    }
                }
                // Streamed, so gone after one attempt, whatever the method.
                Ok(Buffered::TooLarge(body)) => {
                    if !deferred.mirrors.is_empty() {
                        debug!("the request body is over the replay limit; not mirrored");
                    }
                    let request = Request::from_parts(parts, body);
                    self.attempt_once(&state, &service, port, request, timeouts.single_attempt())
                        .await
                }
            },
        };
        respond(
            exchange,
            &service,
            port,
            deferred.response_filters,
            form,
            log,
            None,
        )
    }

    /// Phases 3 and 4: route, filters, backend (authorization and faults
    /// came first). Returns the service and port to send to, or the answer
    /// to give instead.
    fn prepare(
        &self,
        downstream: &Downstream,
        config: &WaypointConfig,
        state: &State,
        parts: &mut http::request::Parts,
        log: &mut RequestLog,
        deferred: &mut Deferred,
    ) -> Result<Target, LocalReply> {
        let key = ServiceKey {
            hostname: downstream.service.hostname.clone(),
            port: downstream.port,
        };
        let whole_service = Target {
            service: downstream.service.clone(),
            port: downstream.port,
            timeouts: Timeouts::default(),
            retry: None,
        };
        let Some(table) = config.routes(&key) else {
            return Ok(whole_service);
        };
        let head = RequestHead::from_parts(parts);
        let selected = match table.select(&head) {
            Selection::Matched(selected) => selected,
            Selection::NoRoutes => return Ok(whole_service),
            Selection::NoRoute => {
                return Err(LocalReply::new(
                    StatusCode::NOT_FOUND,
                    "no route matches the request\n",
                    "no HTTPRoute rule matches".into(),
                )
                .flagged(ResponseFlag::NoRoute));
            }
        };
        log.route = Some(selected.route.key());
        log.route_rule = Some(selected.rule_index);
        let matched_prefix = selected.matched_prefix().map(str::to_owned);
        let rule: &Rule = selected.rule;
        let prefix = matched_prefix.as_deref();
        apply_filters(&rule.filters, parts, prefix, downstream.port, deferred)?;
        let Some(backend) = choose_backend(&rule.backends, fastrand::u32(..)) else {
            return Err(LocalReply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no backend\n",
                "the rule has no backend with a weight".into(),
            ));
        };
        apply_filters(&backend.filters, parts, prefix, downstream.port, deferred)?;
        match &backend.backend {
            Backend::Invalid { reason } => Err(LocalReply::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid backend\n",
                format!("invalid backend: {reason}"),
            )),
            Backend::Service(target) => {
                let service = if *target.hostname == *downstream.service.hostname {
                    Some(downstream.service.clone())
                } else {
                    // Another service of the mesh: a scan, but only for
                    // routes that send elsewhere.
                    state
                        .services()
                        .find(|s| *s.hostname == *target.hostname)
                        .cloned()
                };
                match service {
                    Some(service) => Ok(Target {
                        service,
                        port: target.port,
                        timeouts: rule.timeouts,
                        retry: rule.retry.clone(),
                    }),
                    None => Err(LocalReply::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy upstream\n",
                        format!(
                            "backend {}:{} is not a known service",
                            target.hostname, target.port
                        ),
                    )
                    .flagged(ResponseFlag::NoCluster)),
                }
            }
        }
    }
}

/// The client's answer from the last attempt: the upstream's response
/// with the response filters, or the waypoint's own 503 or 504 (in
/// `form`). `URX` marks an answer whose retries ran out. An upgrade's 101
/// switches the connection (`upgrade`); a 101 nobody asked for is the
/// upstream's protocol error (502).
fn respond(
    exchange: Exchange,
    service: &Service,
    port: u16,
    response_filters: Vec<HeaderModifier>,
    form: ReplyForm,
    mut log: RequestLog,
    upgrade: Option<Requested<'_>>,
) -> Response<ResponseBody> {
    log.attempts = exchange.attempts;
    if let Some(endpoint) = &exchange.endpoint {
        log.destination = Some(endpoint.workload.clone());
        log.dst_addr = Some(endpoint.addr);
    }
    let exhausted = exchange
        .retries_exhausted
        .then_some(ResponseFlag::UpstreamRetryLimitExceeded);
    match exchange.outcome {
        Outcome::Answered(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            match upgrade {
                Some(requested) => requested.switch(response, &response_filters, log),
                None => {
                    let reply = LocalReply::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream connect error or disconnect/reset before headers. reset reason: protocol error\n",
                        "the upstream answered 101 to a request that asked for no upgrade".into(),
                    );
                    local(reply, form, log)
                }
            }
        }
        Outcome::Answered(response) => {
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            for modifier in &response_filters {
                filter::apply_header_modifier(modifier, &mut head.headers);
            }
            log.status = Some(head.status);
            // `DI` from the fault phase stays unless retries ran out.
            log.flag = exhausted.unwrap_or(log.flag);
            // A trailers-only gRPC response carries its status here.
            log.grpc_status = grpc_status(&head.headers);
            Response::from_parts(head, Logged::upstream(body, log))
        }
        Outcome::Failed(error) => {
            info!(%error, attempts = exchange.attempts, "upstream request failed");
            let reply = LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error\n",
                error.to_string(),
            )
            .flagged(exhausted.unwrap_or(error.response_flag()));
            local(reply, form, log)
        }
        Outcome::TimedOut(deadline) => {
            let reply = LocalReply::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout\n",
                format!("no response within {deadline:?} (the route's timeouts)"),
            )
            .flagged(ResponseFlag::UpstreamTimeout);
            local(reply, form, log)
        }
        Outcome::Overflow(limit) => {
            let what = match limit {
                Limit::Requests => "request limit (http2MaxRequests)",
                Limit::PendingRequests => {
                    "limit of requests waiting for a connection (http1MaxPendingRequests)"
                }
            };
            let reply = LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow\n",
                format!(
                    "the DestinationRule {what} of {}:{port} is reached",
                    service.hostname
                ),
            )
            .flagged(ResponseFlag::UpstreamOverflow);
            local(reply, form, log)
        }
        Outcome::NoEndpoint => {
            let reply = LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream\n",
                format!("no healthy endpoint of {}:{port}", service.hostname),
            )
            .flagged(ResponseFlag::NoHealthyUpstream);
            local(reply, form, log)
        }
    }
}

/// Replaces the request path by its normalized form (see `normalize`), so
/// that policy, routing and the app all see the same path; 400 when it
/// cannot be normalized.
fn normalize_request_path(parts: &mut http::request::Parts) -> Result<(), LocalReply> {
    let path = parts.uri.path();
    let normalized = match normalize_path(path) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normalized)) => normalized,
        Err(error) => {
            return Err(LocalReply::new(
                StatusCode::BAD_REQUEST,
                "malformed request path\n",
                error.to_string(),
            ));
        }
    };
    let with_query = match parts.uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let invalid = |error: String| {
        LocalReply::new(
            StatusCode::BAD_REQUEST,
            "malformed request path\n",
            format!("the normalized path is not valid: {error}"),
        )
    };
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query =
        Some(PathAndQuery::try_from(with_query).map_err(|e| invalid(e.to_string()))?);
    // Never fall back to the raw path: policy must see the normalized one.
    parts.uri = Uri::from_parts(uri).map_err(|e| invalid(e.to_string()))?;
    Ok(())
}

/// L7 policy of the service, on the request as the client sent it (path
/// normalized), before any filter changes it, as Envoy's RBAC filter runs
/// before the router.
fn authorize(
    downstream: &Downstream,
    config: &WaypointConfig,
    parts: &http::request::Parts,
) -> Result<(), LocalReply> {
    let Some(policies) = config.policies(&downstream.service.hostname) else {
        return Ok(());
    };
    let identity = &downstream.peer_principal;
    let principal = identity.strip_prefix("spiffe://").unwrap_or(identity);
    let host = RequestHead::from_parts(parts).host().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let request = L7Request {
        source_principal: Some(principal),
        source_namespace: Some(downstream.peer_identity.namespace()),
        source_ip: downstream.peer_addr.ip(),
        host,
        port: downstream.port,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        headers: &parts.headers,
    };
    let decision = authz::evaluate(&policies.policies, &request);
    match decision.verdict {
        Verdict::Allow => Ok(()),
        denied => Err(LocalReply::new(
            authz::DENIED_STATUS,
            authz::DENIED_BODY,
            match denied {
                Verdict::DeniedBy(policy) => format!("denied by policy {policy}"),
                _ => "no ALLOW policy matches".into(),
            },
        )),
    }
}

/// The service's VirtualService faults, after policy and before routing,
/// as Envoy's fault filter: sleeps for an injected delay (`DI`), and
/// answers an injected abort (`FI`) with Envoy's body (and its
/// `grpcStatus`, to a gRPC request).
async fn inject_fault(
    downstream: &Downstream,
    config: &WaypointConfig,
    parts: &http::request::Parts,
    log: &mut RequestLog,
) -> Result<(), LocalReply> {
    let Some(faults) = config.faults(&downstream.service.hostname) else {
        return Ok(());
    };
    let request = FaultRequest {
        path: parts.uri.path(),
        method: &parts.method,
        headers: &parts.headers,
    };
    let Some(injection) = faults.decide(&request, Rolls::draw()) else {
        return Ok(());
    };
    if let Some(delay) = injection.delay {
        debug!(fault = %injection.source, ?delay, "fault injection: delaying the request");
        tokio::time::sleep(delay).await;
        log.flag = ResponseFlag::DelayInjected;
    }
    match injection.abort {
        None => Ok(()),
        Some(status) => Err(LocalReply::new(
            status,
            "fault filter abort",
            format!("aborted by fault injection ({})", injection.source),
        )
        .with_grpc_status(injection.grpc_status)
        .flagged(if injection.delay.is_some() {
            ResponseFlag::DelayAndFaultInjected
        } else {
            ResponseFlag::FaultInjected
        })),
    }
}

/// Applies request filters in order; response header modifiers are kept
/// for the response, and the mirrors this request rolled for are kept
/// for when its body has been read. A redirect answers at once.
fn apply_filters(
    filters: &[Filter],
    parts: &mut http::request::Parts,
    matched_prefix: Option<&str>,
    listener_port: u16,
    deferred: &mut Deferred,
) -> Result<(), LocalReply> {
    for f in filters {
        match f {
            Filter::RequestHeaderModifier(modifier) => {
                filter::apply_header_modifier(modifier, &mut parts.headers);
            }
            Filter::ResponseHeaderModifier(modifier) => {
                deferred.response_filters.push(modifier.clone());
            }
            Filter::RequestRedirect(redirect) => {
                let head = RequestHead::from_parts(parts);
                let answer = filter::redirect(&head, redirect, matched_prefix, listener_port)
                    .map_err(filter_failed)?;
                return Err(LocalReply {
                    location: Some(answer.location),
                    ..LocalReply::new(answer.status, "", "redirected".into())
                });
            }
            Filter::UrlRewrite(rewrite) => {
                let head = RequestHead::from_parts(parts);
                let url =
                    filter::rewrite_url(&head, rewrite, matched_prefix).map_err(filter_failed)?;
                url.apply(&mut parts.uri, &mut parts.headers)
                    .map_err(filter_failed)?;
            }
            // Sent once the body is read (see `mirror`).
            Filter::RequestMirror(mirror) => {
                if mirror.fraction.contains(fastrand::u32(..)) {
                    deferred.mirrors.push(mirror.clone());
                }
            }
        }
    }
    Ok(())
}

fn filter_failed(error: filter::FilterError) -> LocalReply {
    LocalReply::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "filter failed\n",
        error.to_string(),
    )
}

/// Makes the head fit the upstream connection: the request's own version;
/// HTTP/1 in origin form with a `Host`, HTTP/2 with scheme and authority.
fn prepare_upstream_head(parts: &mut http::request::Parts, service: &Service, port: u16) {
    strip_hop_by_hop(&mut parts.headers);
    if parts.version == Version::HTTP_2
        && parts.uri.scheme() == Some(&Scheme::HTTP)
        && parts.uri.authority().is_some()
        && parts.uri.path_and_query().is_some()
    {
        // As HTTP/2 clients send it: rebuilding the URI would copy its
        // authority twice for the same URI.
        parts.headers.remove(HOST);
        return;
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{}:{port}", service.hostname));
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if parts.version == Version::HTTP_2 {
        let mut uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .path_and_query(path.clone());
        uri = uri.authority(authority.as_str());
        if let Ok(uri) = uri.build() {
            parts.uri = uri;
        }
        parts.headers.remove(HOST);
    } else {
        if !parts.headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(&authority)
        {
            parts.headers.insert(HOST, host);
        }
        parts.uri = Uri::from(path);
        parts.version = Version::HTTP_11;
    }
}

#[cfg(test)]
mod tests;
