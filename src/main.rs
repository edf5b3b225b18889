//! The `kps` command: parses the command line, loads the configuration and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kps::config::{AuthMode, Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "kps", version, about = "Key pair service (OpenStack Nova os-keypairs, Huawei KPS)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the APIs (the default command).
    Serve(ServeArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Config file (default: config/kps.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// API listen address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Authentication mode: noauth | static | keystone | aksk.
    #[arg(long, value_name = "MODE")]
    auth: Option<AuthMode>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
    };
    let overrides = Overrides { config: args.config, listen: args.listen, data_dir: args.data_dir, auth: args.auth };
    let config = match Config::load(&overrides, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kps: {error}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log.format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kps: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kps::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kps failed");
            eprintln!("kps: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
