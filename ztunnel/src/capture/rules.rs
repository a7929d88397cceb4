//! The redirection rules of a pod, as one nftables table.
//!
//! The script is a pure function of [`Redirection`] ([`ruleset`]), so what
//! a pod gets is unit-tested as text. It is applied with `nft -f -` run
//! inside the pod's namespace as one transaction that declares the table
//! (a no-op if it exists), deletes it and declares it again with its rules:
//! either all of it applies or nothing does, and a restarted ztunnel
//! reinstalling replaces the rules instead of adding a second copy.
//!
//! Why each rule exists is told in the [module doc](super).

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::{Command, Output, Stdio};

use tracing::debug;

use super::{Error, INBOUND_CAPTURE_PORT, INBOUND_HBONE_PORT, OUTBOUND_CAPTURE_PORT, PodNetns};
use crate::config::DEFAULT_MARK;

/// The nftables table ztunnel owns in each pod, in the `inet` family.
pub const TABLE: &str = "ztunnel";

/// Where to look for `nft` when it is not on `PATH` (root's `sbin`
/// directories are often missing from a service's `PATH`).
const NFT_CANDIDATES: [&str; 3] = ["nft", "/usr/sbin/nft", "/sbin/nft"];

/// What the rules redirect where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirection {
    /// The mark on ztunnel's own sockets; marked packets are never
    /// redirected.
    pub mark: u32,
    /// Where outbound TCP from the pod goes (15001).
    pub outbound_port: u16,
    /// Where inbound TCP to the pod goes, HBONE excepted (15006).
    pub inbound_port: u16,
    /// Inbound HBONE, left alone (15008).
    pub hbone_port: u16,
}

// === impl Redirection ===

impl Default for Redirection {
    fn default() -> Self {
        Redirection {
            mark: DEFAULT_MARK,
            outbound_port: OUTBOUND_CAPTURE_PORT,
            inbound_port: INBOUND_CAPTURE_PORT,
            hbone_port: INBOUND_HBONE_PORT,
        }
    }
}

/// The `nft -f` script that creates or replaces the table.
///
/// The NAT chains see only the first packet of each connection; conntrack
/// applies the same translation to the rest, so the rules cost nothing per
/// packet once a connection is set up.
pub fn ruleset(redirection: &Redirection) -> String {
    let Redirection {
        mark,
        outbound_port,
        inbound_port,
        hbone_port,
    } = *redirection;
    let mut script = String::new();
    // Declare-then-delete makes the delete succeed whether or not the table
    // existed; the whole script is one transaction.
    script.push_str(&remove_script());
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        script,
        "\
table inet {TABLE} {{
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname \"lo\" return
\t\tmeta mark {mark:#010x} return
\t\ttcp dport {hbone_port} return
\t\tmeta l4proto tcp redirect to :{inbound_port}
\t}}

\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta mark {mark:#010x} return
\t\toifname \"lo\" return
\t\tip daddr 127.0.0.0/8 return
\t\tip6 daddr ::1 return
\t\tmeta l4proto tcp redirect to :{outbound_port}
\t}}
}}"
    );
    script
}

/// The script that deletes the table, whether or not it exists.
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Installs (or replaces) the rules in `netns`, atomically.
pub fn install(netns: &PodNetns, redirection: &Redirection) -> Result<(), Error> {
    apply(
        netns,
        "install the redirection rules",
        &ruleset(redirection),
    )?;
    debug!(netns = %netns.path().display(), ?redirection, "redirection rules installed");
    Ok(())
}

/// Removes the rules from `netns`; nothing to do if there are none.
pub fn remove(netns: &PodNetns) -> Result<(), Error> {
    apply(netns, "remove the redirection rules", &remove_script())?;
    debug!(netns = %netns.path().display(), "redirection rules removed");
    Ok(())
}

/// The table as `nft list` prints it, or `None` when there is none.
pub fn installed(netns: &PodNetns) -> Result<Option<String>, Error> {
    let tables = nft(netns, "list the tables", &["list", "tables", "inet"], None)?;
    let declared = format!("table inet {TABLE}");
    if !tables.lines().any(|line| line.trim() == declared) {
        return Ok(None);
    }
    let table = nft(
        netns,
        "list the redirection rules",
        &["list", "table", "inet", TABLE],
        None,
    )?;
    Ok(Some(table))
}

/// Runs `nft -f -` with `script` inside `netns`.
fn apply(netns: &PodNetns, action: &'static str, script: &str) -> Result<(), Error> {
    nft(netns, action, &["-f", "-"], Some(script)).map(drop)
}

/// Runs `nft args` inside `netns` (the child inherits the namespace of the
/// thread that spawns it), returning its standard output.
fn nft(
    netns: &PodNetns,
    action: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let output = netns.run(|| spawn_nft(args, stdin))?.map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NftMissing
        } else {
            Error::NftSpawn {
                path: netns.path().to_path_buf(),
                source,
            }
        }
    })?;
    if !output.status.success() {
        return Err(Error::Nft {
            path: netns.path().to_path_buf(),
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Spawns the first `nft` found and feeds it `stdin`. `NotFound` means
/// none was.
fn spawn_nft(args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
    for program in NFT_CANDIDATES {
        let spawned = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads the whole script before doing anything; dropping the
            // pipe afterwards is its end of input.
            pipe.write_all(script.as_bytes())?;
        }
        return child.wait_with_output();
    }
    Err(io::ErrorKind::NotFound.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ruleset_is_istios_ports_and_mark() {
        let expected = "\
table inet ztunnel
delete table inet ztunnel
table inet ztunnel {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname \"lo\" return
\t\tmeta mark 0x00000539 return
\t\ttcp dport 15008 return
\t\tmeta l4proto tcp redirect to :15006
\t}

\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta mark 0x00000539 return
\t\toifname \"lo\" return
\t\tip daddr 127.0.0.0/8 return
\t\tip6 daddr ::1 return
\t\tmeta l4proto tcp redirect to :15001
\t}
}
";
        assert_eq!(ruleset(&Redirection::default()), expected);
    }

    #[test]
    fn settings_change_the_rules() {
        let script = ruleset(&Redirection {
            mark: 0xabc,
            outbound_port: 1,
            inbound_port: 2,
            hbone_port: 3,
        });
        assert_eq!(script.matches("meta mark 0x00000abc return").count(), 2);
        assert!(script.contains("tcp dport 3 return"));
        assert!(script.contains("redirect to :2\n"));
        assert!(script.contains("redirect to :1\n"));
        assert!(!script.contains("1500"));
    }

    #[test]
    fn returns_come_before_redirects() {
        // nft evaluates rules in order: an exemption after the redirect
        // would never match.
        let script = ruleset(&Redirection::default());
        for chain in script.split("chain ").skip(1) {
            let lines: Vec<&str> = chain.lines().map(str::trim).collect();
            let redirect = lines.iter().position(|l| l.contains("redirect")).unwrap();
            let last_return = lines.iter().rposition(|l| l.ends_with("return")).unwrap();
            assert!(last_return < redirect, "{chain}");
        }
    }

    #[test]
    fn replacing_is_one_transaction_that_tolerates_a_missing_table() {
        let script = ruleset(&Redirection::default());
        assert!(script.starts_with(&remove_script()));
        assert_eq!(script.matches("delete table").count(), 1);
        assert_eq!(
            remove_script(),
            "table inet ztunnel\ndelete table inet ztunnel\n"
        );
    }
}
