//! The `kps` command: parses the command line, loads the configuration and calls the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kps::commands::{self, Remote};
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
    /// Portable backups of all records (ciphertext only).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Re-seal escrowed private keys (after a master-key rotation, or onto another encryptor).
    Rewrap {
        #[command(flatten)]
        common: CommonArgs,
        /// Move every escrowed key to the current master key (default encryptor).
        #[arg(long, conflicts_with = "to_kms_key")]
        to_default: bool,
        /// Move every escrowed key to this KMS key (alias or id).
        #[arg(long, value_name = "NAME")]
        to_kms_key: Option<String>,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
        /// Base URL of the running server (default: http://<listen>).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Admin credential for the running server, sent as X-Auth-Token.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// The master keyring of the default encryptor.
    #[command(subcommand, name = "master-key")]
    MasterKey(MasterKeyCommand),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The PostgreSQL database (store.backend = postgres).
    #[command(subcommand)]
    Db(DbCommand),
    /// The access policy (policy.file).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the default policy in oslo.policy's YAML, commented out, each action with its description (as
    /// oslopolicy-sample-generator does).
    Sample,
    /// Whether a caller may perform an action on a target under the configured policy: prints allowed or
    /// denied, exit 0 or 1.
    Check(Box<PolicyCheckArgs>),
}

#[derive(Args)]
struct PolicyCheckArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The policy file to use instead of the configured policy.file.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The action, e.g. os_compute_api:os-keypairs:show.
    #[arg(long)]
    action: String,
    /// The caller's user id.
    #[arg(long)]
    user: String,
    /// The caller's project id.
    #[arg(long)]
    project: String,
    /// The caller's roles, comma-separated.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// The user whose key pairs the action is on (default: the caller).
    #[arg(long, value_name = "USER")]
    target_user: Option<String>,
    /// The project of the key pair the action is on (default: no single key pair).
    #[arg(long, value_name = "PROJECT")]
    target_project: Option<String>,
    /// The key pair is a domain key of its project.
    #[arg(long, requires = "target_project")]
    domain_key: bool,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or migrate the schema `kps` to this version, under an advisory lock, without serving.
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the sample configuration: every key, commented out, with its default and meaning (this is how
    /// config/kps.toml is generated).
    Sample,
    /// Load the configuration as `kps serve` would (file, environment, flags), check the files it names and
    /// their modes, and print the effective settings with secrets redacted; exit 1 with the reason when
    /// something is wrong.
    Check(ServeArgs),
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Add a new random master key and make it current (older keys stay to open older records).
    Generate {
        #[command(flatten)]
        common: CommonArgs,
        /// Write the resulting keyring to stdout instead of changing the file.
        #[arg(long)]
        print: bool,
        /// Write the keyring wrapped by this KMS key (alias or id; auto-unseal): a new keyring, or a wrapped
        /// one re-wrapped under it. A wrapped keyring stays wrapped without this flag too.
        #[arg(long, value_name = "NAME")]
        kms_key: Option<String>,
    },
    /// Convert the plaintext keyring into one wrapped by a KMS key (auto-unseal; atomic replace).
    Wrap {
        #[command(flatten)]
        common: CommonArgs,
        /// The KMS key (alias or id); default custody.master_key_kms_key.
        #[arg(long, value_name = "NAME")]
        kms_key: Option<String>,
    },
    /// Convert a KMS-wrapped keyring back to the plaintext keyring (leaving the KMS; atomic replace).
    Unwrap {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Write every record to FILE; through the running server's admin API if one holds the data dir.
    Export {
        file: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
        /// Base URL of the running server (default: http://<listen>).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Admin credential for the running server, sent as X-Auth-Token.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Load FILE into the store (server stopped); refuses a non-empty store unless --force.
    Import {
        file: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
        /// Replace the store's contents: every key pair, name-index entry and master key verifier it holds is
        /// deleted, in the same atomic write that loads FILE (ids still never go back).
        #[arg(long)]
        force: bool,
    },
}

/// Options every command takes.
#[derive(Args, Default, Clone)]
struct CommonArgs {
    /// Config file (default: config/kps.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// API listen address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Authentication mode: noauth | static | keystone | aksk.
    #[arg(long, value_name = "MODE")]
    auth: Option<AuthMode>,
}

/// mimalloc instead of glibc's malloc: per-request allocations from two tokio workers and the store's
/// committer thread made glibc's arena bookkeeping (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`) a
/// quarter of an import's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the configuration (and with it any secret) is read: no core dumps, no ptrace or /proc/<pid>/mem
    // by other processes of the same user, for every command (serve, rewrap and master-key hold key material).
    if let Err(error) = kps::process::make_non_dumpable() {
        return fail(&format!("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {error}"));
    }
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    let (common, listen, auth) = match &command {
        // Before any configuration is loaded: it prints what the code declares, whatever the file or the
        // environment holds.
        Command::Config(ConfigCommand::Sample) => {
            return match std::io::stdout().write_all(kps::config::sample().as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("cannot write the sample: {error}")),
            };
        }
        Command::Policy(PolicyCommand::Sample) => {
            return match std::io::stdout().write_all(kps::api::policy::sample().as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("cannot write the sample: {error}")),
            };
        }
        Command::Serve(args) | Command::Config(ConfigCommand::Check(args)) => {
            (args.common.clone(), args.listen.clone(), args.auth)
        }
        Command::Backup(BackupCommand::Export { common, .. } | BackupCommand::Import { common, .. })
        | Command::MasterKey(
            MasterKeyCommand::Generate { common, .. }
            | MasterKeyCommand::Wrap { common, .. }
            | MasterKeyCommand::Unwrap { common },
        )
        | Command::Rewrap { common, .. }
        | Command::Db(DbCommand::Migrate { common }) => (common.clone(), None, None),
        Command::Policy(PolicyCommand::Check(args)) => (args.common.clone(), None, None),
    };
    let overrides = Overrides { config: common.config, listen, data_dir: common.data_dir, auth };
    let config = match Config::load(&overrides, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if let Command::Policy(PolicyCommand::Check(args)) = command {
        let PolicyCheckArgs { policy, action, user, project, roles, target_user, target_project, domain_key, .. } =
            *args;
        let caller = kps::api::auth::Caller { user_id: user, project_id: project, roles };
        let target = kps::api::policy::CheckTarget { user: target_user, project: target_project, domain_key };
        return policy_check(policy.as_deref().or(config.policy.file.as_deref()), &action, &caller, &target);
    }
    if let Command::Config(ConfigCommand::Check(_)) = command {
        return match commands::config_check(&config) {
            Ok(report) => match std::io::stdout().write_all(report.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("cannot write the report: {error}")),
            },
            Err(error) => fail(&format!("config check failed: {error}")),
        };
    }
    init_logging(config.log.format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve(_) => kps::serve(config).await.map_err(|e| e.to_string()),
            Command::Backup(BackupCommand::Export { file, url, token, .. }) => {
                let report = commands::backup_export(&config, &file, &Remote { url, token }).await;
                report.map(|line| println!("{line}")).map_err(|e| e.to_string())
            }
            Command::Rewrap { to_default, to_kms_key, dry_run, url, token, .. } => {
                let options = kps::service::RewrapOptions { to_default, to_kms_key, dry_run };
                let report = commands::rewrap(&config, &options, &Remote { url, token }).await;
                report.map(|line| println!("{line}")).map_err(|e| e.to_string())
            }
            Command::MasterKey(MasterKeyCommand::Generate { print, kms_key, .. }) => {
                commands::master_key_generate(&config, print, kms_key.as_deref())
                    .await
                    .map(|out| print!("{}", out.as_str()))
                    .map_err(|e| e.to_string())
            }
            Command::MasterKey(MasterKeyCommand::Wrap { kms_key, .. }) => {
                commands::master_key_wrap(&config, kms_key.as_deref())
                    .await
                    .map(|line| println!("{line}"))
                    .map_err(|e| e.to_string())
            }
            Command::MasterKey(MasterKeyCommand::Unwrap { .. }) => {
                commands::master_key_unwrap(&config).await.map(|line| println!("{line}")).map_err(|e| e.to_string())
            }
            Command::Db(DbCommand::Migrate { .. }) => {
                commands::db_migrate(&config).await.map(|line| println!("{line}")).map_err(|e| e.to_string())
            }
            // Answered above, before the configuration was loaded (samples) or before the runtime started.
            Command::Config(_) | Command::Policy(_) => Ok(()),
            Command::Backup(BackupCommand::Import { file, force, .. }) => {
                let summary = commands::backup_import(&config, &file, force).await.map_err(|e| e.to_string())?;
                println!(
                    "imported {} key pairs and {} name-index entries; next id {}",
                    summary.keypairs, summary.name_index_entries, summary.next_id
                );
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// `kps policy check`: "allowed" and exit 0, "denied" and exit 1; exit 1 with the reason when the policy or
/// the action is wrong.
fn policy_check(
    file: Option<&std::path::Path>,
    action: &str,
    caller: &kps::api::auth::Caller,
    target: &kps::api::policy::CheckTarget,
) -> ExitCode {
    let policy = match file {
        Some(path) => match kps::api::policy::Policy::load(path) {
            Ok(policy) => policy,
            Err(error) => return fail(&error),
        },
        None => kps::api::policy::Policy::default(),
    };
    match policy.check(action, caller, target) {
        Ok(true) => {
            let _ = writeln!(std::io::stdout(), "allowed: {action}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            let _ = writeln!(std::io::stdout(), "denied: {action}");
            ExitCode::FAILURE
        }
        Err(error) => fail(&error),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    // Not `eprintln!`: it panics when stderr cannot be written, and the exit code must stay 1.
    let _ = writeln!(std::io::stderr(), "kps: {error}");
    ExitCode::FAILURE
}

/// The AWS SDK's crates log whole requests at trace level (`aws_smithy_runtime`: "transmitting request",
/// and an Encrypt request body holds a data key): capped at `info` whatever `KPS_LOG` says. A more specific
/// target directive wins over `KPS_LOG=trace` in an `EnvFilter`.
const BODY_LOGGING_TARGETS: [&str; 8] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_http",
    "aws_smithy_types",
    "aws_sigv4",
    "aws_runtime",
    "aws_sdk_kms",
];

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in BODY_LOGGING_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    // A log line that cannot be written is dropped and counted, never reported with `eprintln!` (which
    // panics when stderr is what fails): `kps::logging`.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(kps::logging::Stderr).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The flags config::keys::KEYS names are exactly the flags of `kps serve` that set a key (`--config`
    /// names the file itself).
    #[test]
    fn the_declared_flags_are_the_flags_of_serve() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let flags: Vec<String> = serve
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| *long != "config")
            .map(|long| format!("--{long}"))
            .collect();
        let declared: Vec<&str> = kps::config::keys::KEYS.iter().filter_map(|key| key.flag).collect();
        for flag in &flags {
            assert!(declared.contains(&flag.as_str()), "kps serve {flag} sets no key declared in config::keys");
        }
        for flag in declared {
            assert!(flags.iter().any(|f| f == flag), "config::keys declares {flag}, which kps serve does not take");
        }
    }
}
