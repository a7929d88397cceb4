//! The lists (`workloads`, `services`, `policies`, `certs`, `connections`)
//! as tables or re-serialized objects. Pure: model and clock in, text out.
//!
//! Rows are sorted the same way for every output (namespace then name, or
//! the identity, or the connection id), so two runs diff cleanly. `wide`
//! repeats the `table` columns and adds more at the end; `-` stands for an
//! absent value.

use std::cmp::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::model::{Certificate, Connection, GatewayAddress, Match, Policy, Service, Workload};
use super::{Error, Output, age};
use crate::table::Table;

/// `-o workloads`.
pub fn workloads(workloads: &[Workload], output: Output) -> Result<String, Error> {
    let rows = sorted(workloads, |a, b| {
        (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid))
    });
    list(&rows, output, "No workloads in ztunnel's config.", |wide| {
        let mut header = vec!["NAMESPACE", "NAME", "ADDRESS", "NODE", "PROTOCOL"];
        if wide {
            header.extend(["IDENTITY", "WAYPOINT", "SERVICES", "HEALTHY"]);
        }
        let mut table = Table::new(header);
        for w in &rows {
            let mut cells = vec![
                w.namespace.clone(),
                w.name.clone(),
                joined(&w.addresses),
                or_dash(w.node.as_deref()),
                w.protocol.clone(),
            ];
            if wide {
                cells.extend([
                    or_dash(w.identity.as_deref()),
                    waypoint(w.waypoint.as_ref()),
                    joined(w.services.keys()),
                    w.healthy.to_string(),
                ]);
            }
            table.row(cells);
        }
        table
    })
}

/// `-o services`.
pub fn services(services: &[Service], output: Output) -> Result<String, Error> {
    let rows = sorted(services, |a, b| {
        (&a.namespace, &a.name, &a.hostname).cmp(&(&b.namespace, &b.name, &b.hostname))
    });
    list(&rows, output, "No services in ztunnel's config.", |wide| {
        let mut header = vec!["NAMESPACE", "NAME", "VIPS", "PORTS"];
        if wide {
            header.extend(["HOSTNAME", "WAYPOINT", "SUBJECT-ALT-NAMES"]);
        }
        let mut table = Table::new(header);
        for s in &rows {
            let vips = s.vips.iter().map(|vip| match vip.network.as_str() {
                "" => vip.ip.clone(),
                network => format!("{network}/{}", vip.ip),
            });
            let ports = s.ports.iter().map(|&(port, target)| match target {
                // 0: each workload's own mapping decides.
                0 => port.to_string(),
                target if target == port => port.to_string(),
                target => format!("{port}->{target}"),
            });
            let mut cells = vec![
                s.namespace.clone(),
                s.name.clone(),
                joined(vips),
                joined(ports),
            ];
            if wide {
                cells.extend([
                    s.hostname.clone(),
                    waypoint(s.waypoint.as_ref()),
                    joined(&s.subject_alt_names),
                ]);
            }
            table.row(cells);
        }
        table
    })
}

/// `-o policies`.
pub fn policies(policies: &[Policy], output: Output) -> Result<String, Error> {
    let rows = sorted(policies, |a, b| {
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
    list(
        &rows,
        output,
        "No authorization policies in ztunnel's config.",
        |wide| {
            let mut header = vec!["NAMESPACE", "NAME", "SCOPE", "ACTION", "DRY-RUN"];
            if wide {
                header.push("RULES");
            }
            let mut table = Table::new(header);
            for p in &rows {
                let mut cells = vec![
                    p.namespace.clone(),
                    p.name.clone(),
                    p.scope.clone(),
                    p.action.clone(),
                    p.dry_run.to_string(),
                ];
                if wide {
                    cells.push(rules(p));
                }
                table.row(cells);
            }
            table
        },
    )
}

/// `-o certs`.
pub fn certs(certs: &[Certificate], output: Output, now: SystemTime) -> Result<String, Error> {
    let rows = sorted(certs, |a, b| a.identity.cmp(&b.identity));
    list(
        &rows,
        output,
        "No certificates: no local workload identities.",
        |wide| {
            let mut header = vec!["IDENTITY", "STATE", "EXPIRES"];
            if wide {
                header.extend(["NOT-BEFORE", "NOT-AFTER", "SERIAL", "ERROR"]);
            }
            let mut table = Table::new(header);
            for c in &rows {
                let expires = c.not_after.as_deref().map(|at| age::relative_str(at, now));
                let mut cells = vec![
                    c.identity.clone(),
                    c.state.to_string(),
                    or_dash(expires.as_deref()),
                ];
                if wide {
                    cells.extend([
                        or_dash(c.not_before.as_deref()),
                        or_dash(c.not_after.as_deref()),
                        or_dash(c.serial.as_deref()),
                        or_dash(c.error.as_deref()),
                    ]);
                }
                table.row(cells);
            }
            table
        },
    )
}

/// `-o connections`. SOURCE and DESTINATION name the workload where ztunnel
/// knows it, the address otherwise.
pub fn connections(
    connections: &[Connection],
    output: Output,
    now: SystemTime,
) -> Result<String, Error> {
    let rows = sorted(connections, |a, b| a.id.cmp(&b.id));
    list(&rows, output, "No open connections.", |wide| {
        let mut header = vec![
            "ID",
            "DIRECTION",
            "PROTOCOL",
            "SOURCE",
            "DESTINATION",
            "AGE",
        ];
        if wide {
            header.extend([
                "SRC-ADDR",
                "SRC-IDENTITY",
                "DST-ADDR",
                "DST-IDENTITY",
                "DST-SERVICE",
                "STARTED",
            ]);
        }
        let mut table = Table::new(header);
        for c in &rows {
            let destination = c.dst_workload.as_deref().or(c.dst_addr.as_deref());
            let mut cells = vec![
                c.id.to_string(),
                c.direction.to_string(),
                c.protocol.clone(),
                c.src_workload.clone().unwrap_or_else(|| c.src_addr.clone()),
                or_dash(destination),
                age::age_str(&c.started, now),
            ];
            if wide {
                cells.extend([
                    c.src_addr.clone(),
                    or_dash(c.src_identity.as_deref()),
                    or_dash(c.dst_addr.as_deref()),
                    or_dash(c.dst_identity.as_deref()),
                    or_dash(c.dst_service.as_deref()),
                    c.started.clone(),
                ]);
            }
            table.row(cells);
        }
        table
    })
}

/// `value` as pretty JSON or YAML, ending in a newline.
pub fn encode<T: Serialize + ?Sized>(value: &T, output: Output) -> Result<String, Error> {
    match output {
        Output::Yaml => serde_yaml_ng::to_string(value).map_err(|error| Error::Encode {
            format: "YAML",
            reason: error.to_string(),
        }),
        Output::Json | Output::Table | Output::Wide => serde_json::to_string_pretty(value)
            .map(|json| json + "\n")
            .map_err(|error| Error::Encode {
                format: "JSON",
                reason: error.to_string(),
            }),
    }
}

/// The objects for json/yaml, the sentence `empty` for an empty table, the
/// table otherwise (`table(wide)` builds it).
fn list<T: Serialize>(
    rows: &[&T],
    output: Output,
    empty: &str,
    table: impl FnOnce(bool) -> Table,
) -> Result<String, Error> {
    match output {
        Output::Json | Output::Yaml => encode(rows, output),
        Output::Table | Output::Wide if rows.is_empty() => Ok(format!("{empty}\n")),
        Output::Table => Ok(table(false).render()),
        Output::Wide => Ok(table(true).render()),
    }
}

/// References to `items` in the order of `by`; a stable sort, so equal keys
/// keep ztunnel's order.
fn sorted<T>(items: &[T], by: impl FnMut(&&T, &&T) -> Ordering) -> Vec<&T> {
    let mut rows: Vec<&T> = items.iter().collect();
    rows.sort_by(by);
    rows
}

fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(value) if !value.is_empty() => value.to_owned(),
        _ => "-".to_owned(),
    }
}

/// Comma-separated, `-` when empty.
fn joined<I>(values: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut out = String::new();
    for value in values {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(value.as_ref());
    }
    if out.is_empty() { "-".to_owned() } else { out }
}

fn waypoint(waypoint: Option<&GatewayAddress>) -> String {
    waypoint.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A policy's groups in one line, by Istio's semantics: groups separated by
/// `;` (any may match), rules within a group by ` and ` (all must), the
/// matches of a rule by ` or ` (any may). A policy without groups matches
/// nothing; a group without rules matches everything.
fn rules(policy: &Policy) -> String {
    if policy.groups.is_empty() {
        return "(no groups: matches nothing)".to_owned();
    }
    let groups: Vec<String> = policy
        .groups
        .iter()
        .map(|rules| {
            if rules.is_empty() {
                return "any connection".to_owned();
            }
            let rules: Vec<String> = rules
                .iter()
                .map(|matches| {
                    let matches: Vec<String> = matches.iter().map(conditions).collect();
                    match matches.as_slice() {
                        [] => "(nothing)".to_owned(),
                        [one] => one.clone(),
                        many => format!("({})", many.join(" or ")),
                    }
                })
                .collect();
            rules.join(" and ")
        })
        .collect();
    groups.join("; ")
}

/// The conditions one match sets, as `field=a|b`, joined by `,`. Fields a
/// newer ztunnel added show too, unless empty.
fn conditions(m: &Match) -> String {
    fn field<T: ToString>(out: &mut Vec<String>, name: &str, values: &[T]) {
        if !values.is_empty() {
            let values: Vec<String> = values.iter().map(ToString::to_string).collect();
            out.push(format!("{name}={}", values.join("|")));
        }
    }
    let mut out = Vec::new();
    field(&mut out, "namespaces", &m.namespaces);
    field(&mut out, "not_namespaces", &m.not_namespaces);
    field(&mut out, "principals", &m.principals);
    field(&mut out, "not_principals", &m.not_principals);
    field(&mut out, "service_accounts", &m.service_accounts);
    field(&mut out, "not_service_accounts", &m.not_service_accounts);
    field(&mut out, "source_ips", &m.source_ips);
    field(&mut out, "not_source_ips", &m.not_source_ips);
    field(&mut out, "destination_ips", &m.destination_ips);
    field(&mut out, "not_destination_ips", &m.not_destination_ips);
    field(&mut out, "destination_ports", &m.destination_ports);
    field(&mut out, "not_destination_ports", &m.not_destination_ports);
    for (name, value) in &m.extra {
        let empty = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if !empty {
            out.push(format!("{name}={value}"));
        }
    }
    if out.is_empty() {
        // Istio's semantics: a match that sets nothing matches nothing.
        "(nothing)".to_owned()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests;
