//! `meshctl`: flags, the runtime, printing and exit codes. The commands
//! themselves live in the library (`meshctl::ztunnel`).
//!
//! Exit codes: 0 on success, 1 when the command failed (the reason is on
//! stderr), 2 for a usage error (clap's).

// The one place meshctl prints: its output is the point of the command.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use meshctl::ztunnel::{self, AdminClient, Output, View, admin};

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "The ambient mesh's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what the ztunnel of this node holds and does (its admin API).
    Ztunnel(ZtunnelArgs),
}

#[derive(Debug, Args)]
struct ZtunnelArgs {
    #[command(subcommand)]
    view: View,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
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
    // One request per command: a current-thread runtime is all it needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Ztunnel(args) => {
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
        let Command::Ztunnel(args) = cli.command;
        assert_eq!(args.view, View::Certs);
        assert_eq!(args.output, Output::Wide);
        assert_eq!(args.admin, "10.0.0.1:15000");

        let cli = Cli::try_parse_from(["meshctl", "ztunnel", "status", "-o", "yaml"]).unwrap();
        let Command::Ztunnel(args) = cli.command;
        assert_eq!(args.output, Output::Yaml);
        assert!(Cli::try_parse_from(["meshctl", "ztunnel", "status", "-o", "xml"]).is_err());
        assert!(Cli::try_parse_from(["meshctl", "up"]).is_err());
    }
}
