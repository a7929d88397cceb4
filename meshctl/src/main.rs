//! `meshctl`: flags, the runtime, printing and exit codes. The commands
//! themselves live in the library (`meshctl::ztunnel`).
//!
//! Exit codes: 0 on success, 1 when the command failed (the reason is on
//! stderr), 2 for a usage error (clap's).

// The one place meshctl prints: its output is the point of the command.
#![allow(clippy::print_stdout)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use meshctl::mesh::{self, ExecTarget, UpOptions, state::DEFAULT_STATE_DIR};
use meshctl::ztunnel::{self, AdminClient, Output, View, admin};

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "The ambient mesh's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    local: LocalMesh,
}

/// Which local mesh a command means.
#[derive(Debug, Args)]
struct LocalMesh {
    /// Where local meshes keep their state.
    #[arg(long, env = "MESHCTL_STATE_DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    state_dir: PathBuf,
    /// The local mesh to act on (default: the only one that is up).
    #[arg(long, env = "MESHCTL_MESH", global = true)]
    mesh: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring up a local mesh from a topology file (needs root, like a CNI).
    Up(UpArgs),
    /// Remove a local mesh: its processes, network namespaces and state.
    Down,
    /// Enroll a namespace in the mesh, or take it out, live.
    Namespace {
        #[command(subcommand)]
        action: NamespaceAction,
    },
    /// Serve the Kubernetes objects of a YAML file in the local mesh
    /// (policies, Services...); applying the same file name again replaces it.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Stop serving what `apply -f <file>` served.
    Delete {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Stop a local mesh's component and start it again (`istiod-lite`,
    /// `ztunnel/<node>`, or a pod).
    Restart { component: String },
    /// Run a command inside a pod's network namespace (or a node's).
    Exec(ExecArgs),
    /// Print the log of a local mesh's component.
    Logs {
        /// `istiod-lite`, `ztunnel/<node>`, or a pod (`<pod>` or `<ns>/<pod>`).
        component: String,
    },
    /// Show what the ztunnel of this node holds and does (its admin API).
    Ztunnel(ZtunnelArgs),
    /// Deploy, list or remove a namespace's waypoint (its L7 proxy).
    Waypoint {
        #[command(subcommand)]
        action: WaypointAction,
    },
}

#[derive(Debug, Subcommand)]
enum WaypointAction {
    /// Start a waypoint for a namespace: its Gateway (class istio-waypoint),
    /// its Service and its pod.
    Apply {
        #[arg(short, long)]
        namespace: String,
        /// The Gateway's name.
        #[arg(long, default_value = "waypoint")]
        name: String,
        /// The node to run it on (default: the first).
        #[arg(long)]
        node: Option<String>,
        /// Once it is ready, label the namespace istio.io/use-waypoint=<name>,
        /// so that its services' traffic goes through it.
        #[arg(long)]
        enroll_namespace: bool,
        /// Seconds it may take to become ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// The local mesh's waypoints.
    List,
    /// Remove a waypoint (and the namespace label that uses it).
    Delete {
        #[arg(short, long)]
        namespace: String,
        #[arg(long, default_value = "waypoint")]
        name: String,
    },
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The topology file (e.g. examples/demo.yaml).
    #[arg(short, long)]
    file: PathBuf,
    /// Name the mesh, instead of the topology's `name`.
    #[arg(long)]
    name: Option<String>,
    /// Keep what was made when something fails, to look at it.
    #[arg(long)]
    keep_on_failure: bool,
    /// Seconds each component may take to become ready.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Where waypoints send their traces: an OTLP/gRPC collector,
    /// `http://host:port` (overrides the topology's `tracing`).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Percent (0 to 100) of requests the waypoints trace when the caller
    /// did not decide (the waypoint's default: 1).
    #[arg(long, value_name = "PCT")]
    trace_sampling: Option<f64>,
}

#[derive(Debug, Subcommand)]
enum NamespaceAction {
    /// Set istio.io/dataplane-mode=ambient: the namespace's pods join the mesh.
    Enable { namespace: String },
    /// Remove istio.io/dataplane-mode: the namespace's pods leave the mesh.
    Disable { namespace: String },
    /// Set istio.io/use-waypoint=<name> (the namespace's services' traffic
    /// goes through that waypoint), or remove it with --none; the
    /// waypoint keeps running.
    UseWaypoint {
        namespace: String,
        /// The waypoint, in the same namespace.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        name: Option<String>,
        /// Remove the label instead.
        #[arg(long)]
        none: bool,
    },
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The pod: `<pod>` or `<namespace>/<pod>`.
    #[arg(required_unless_present_any = ["node", "cluster"])]
    pod: Option<String>,
    /// Run in this node's namespace (where its ztunnel runs) instead.
    #[arg(long, conflicts_with_all = ["pod", "cluster"])]
    node: Option<String>,
    /// Run in the node network's namespace (where istiod-lite runs) instead.
    #[arg(long, conflicts_with = "pod")]
    cluster: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ZtunnelArgs {
    #[command(subcommand)]
    view: View,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// The local mesh's node whose ztunnel to ask (enters that node's
    /// network namespace; needs root).
    #[arg(long, global = true)]
    node: Option<String>,
    /// ztunnel's admin address (host:port).
    #[arg(
        long,
        env = "MESHCTL_ZTUNNEL_ADMIN",
        default_value = admin::DEFAULT_ADDR,
        value_parser = parse_host_port,
        global = true
    )]
    admin: String,
}

/// `host:port` with a numeric port: caught here, with the flag's name,
/// rather than as a confusing connect error.
fn parse_host_port(value: &str) -> Result<String, String> {
    let invalid = || format!("`{value}` is not host:port (e.g. 127.0.0.1:15000)");
    let (host, port) = value.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(value.to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    let (state_dir, mesh) = (cli.local.state_dir.as_path(), cli.local.mesh.as_deref());
    match cli.command {
        Command::Up(args) => {
            let options = UpOptions {
                file: args.file,
                name: args.name.or(cli.local.mesh),
                state_dir: cli.local.state_dir,
                keep_on_failure: args.keep_on_failure,
                timeout: Duration::from_secs(args.timeout),
                otlp_endpoint: args.otlp_endpoint,
                trace_sampling: args.trace_sampling,
            };
            Ok(mesh::up(&options, &mut std::io::stderr())?)
        }
        Command::Down => Ok(mesh::down(state_dir, mesh)?),
        Command::Namespace { action } => {
            let (namespace, enrolled) = match action {
                NamespaceAction::Enable { namespace } => (namespace, true),
                NamespaceAction::Disable { namespace } => (namespace, false),
                NamespaceAction::UseWaypoint {
                    namespace, name, ..
                } => {
                    return Ok(mesh::waypoints::use_waypoint(
                        state_dir,
                        mesh,
                        &namespace,
                        name.as_deref(),
                    )?);
                }
            };
            Ok(mesh::set_enrollment(state_dir, mesh, &namespace, enrolled)?)
        }
        Command::Apply { file } => Ok(mesh::apply(state_dir, mesh, &file)?),
        Command::Delete { file } => Ok(mesh::delete(state_dir, mesh, &file)?),
        Command::Restart { component } => Ok(mesh::restart(state_dir, mesh, &component)?),
        Command::Exec(args) => {
            let target = match (args.pod, args.node) {
                (_, Some(node)) => ExecTarget::Node(node),
                (Some(pod), None) if !args.cluster => ExecTarget::Pod(pod),
                _ => ExecTarget::Cluster,
            };
            let mut command = mesh::exec_command(state_dir, mesh, &target, &args.command)?;
            // Only returns when the exec failed.
            let error = command.exec();
            Err(error).context("cannot run `ip netns exec` (is iproute2 installed?)")
        }
        Command::Logs { component } => {
            let path = mesh::log_file(state_dir, mesh, &component)?;
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        }
        Command::Waypoint { action } => match action {
            WaypointAction::Apply {
                namespace,
                name,
                node,
                enroll_namespace,
                timeout,
            } => {
                let options = mesh::waypoints::ApplyOptions {
                    namespace,
                    name,
                    node,
                    enroll_namespace,
                    timeout: Duration::from_secs(timeout),
                };
                Ok(mesh::waypoints::apply(state_dir, mesh, &options)?)
            }
            WaypointAction::List => Ok(mesh::waypoints::list(state_dir, mesh)?),
            WaypointAction::Delete { namespace, name } => {
                Ok(mesh::waypoints::delete(state_dir, mesh, &namespace, &name)?)
            }
        },
        Command::Ztunnel(args) => {
            if let Some(node) = &args.node {
                let netns = mesh::node_netns(state_dir, mesh, node)?;
                // Before the runtime exists: this thread is the only one.
                mesh::probe::enter_netns(&netns).map_err(anyhow::Error::msg)?;
            }
            // One request per command: a current-thread runtime is all it needs.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let client = AdminClient::new(args.admin, admin::DEFAULT_TIMEOUT);
            Ok(runtime.block_on(ztunnel::show(args.view, args.output, &client))?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_must_be_host_and_port() {
        assert_eq!(
            parse_host_port("127.0.0.1:15000").unwrap(),
            "127.0.0.1:15000"
        );
        assert_eq!(parse_host_port("[::1]:15000").unwrap(), "[::1]:15000");
        assert_eq!(parse_host_port("localhost:1").unwrap(), "localhost:1");
        for bad in ["127.0.0.1", ":15000", "host:port", "host:99999", ""] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_and_admin_go_before_or_after_the_view() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "ztunnel",
            "-o",
            "wide",
            "certs",
            "--admin",
            "10.0.0.1:15000",
        ])
        .unwrap();
        let Command::Ztunnel(args) = cli.command else {
            panic!("not ztunnel")
        };
        assert_eq!(args.view, View::Certs);
        assert_eq!(args.output, Output::Wide);
        assert_eq!(args.admin, "10.0.0.1:15000");

        let cli = Cli::try_parse_from(["meshctl", "ztunnel", "status", "-o", "yaml"]).unwrap();
        let Command::Ztunnel(args) = cli.command else {
            panic!("not ztunnel")
        };
        assert_eq!(args.output, Output::Yaml);
        assert!(Cli::try_parse_from(["meshctl", "ztunnel", "status", "-o", "xml"]).is_err());
        assert!(
            Cli::try_parse_from(["meshctl", "up"]).is_err(),
            "up needs -f"
        );
    }

    #[test]
    fn up_takes_where_waypoints_send_traces() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "up",
            "-f",
            "t.yaml",
            "--otlp-endpoint",
            "http://10.20.2.10:4317",
            "--trace-sampling",
            "100",
        ])
        .unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            args.otlp_endpoint.as_deref(),
            Some("http://10.20.2.10:4317")
        );
        assert_eq!(args.trace_sampling, Some(100.0));
        assert!(
            Cli::try_parse_from(["meshctl", "up", "-f", "t", "--trace-sampling", "all"]).is_err()
        );
    }

    #[test]
    fn exec_takes_a_pod_or_a_node_and_a_command() {
        let cli =
            Cli::try_parse_from(["meshctl", "exec", "shop/web", "--", "curl", "-s", "x"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.pod.as_deref(), Some("shop/web"));
        assert_eq!(args.command, ["curl", "-s", "x"]);
        let cli = Cli::try_parse_from(["meshctl", "exec", "--node", "a", "--", "ip", "r"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.node.as_deref(), Some("a"));
        assert!(
            Cli::try_parse_from(["meshctl", "exec", "web"]).is_err(),
            "no command"
        );
        assert!(
            Cli::try_parse_from(["meshctl", "exec", "--", "ls"]).is_err(),
            "no target"
        );
    }
}
