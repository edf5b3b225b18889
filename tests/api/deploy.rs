//! The example files in `deploy/` load as kps would load them: the config file parses and validates, the
//! policy file parses. (The compose file and the systemd unit are checked by `deploy/check.sh` in CI.)

use std::path::Path;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

#[test]
fn the_example_config_is_valid() {
    let config = kps::config::Config::from_file(&deploy("kps.toml")).expect("deploy/kps.toml parses");
    config.validate().expect("deploy/kps.toml validates");
    assert_eq!(config.admin_listen.as_deref(), Some("127.0.0.1:9090"));
    assert!(config.limits.per_caller_rps > 0 && config.limits.per_caller_concurrency > 0);
}

#[test]
fn the_example_policy_loads() {
    kps::api::policy::Policy::load(&deploy("policy.toml")).expect("deploy/policy.toml loads");
}

/// Issue 11.12: the unit forbids core dumps (kps also marks itself non-dumpable, `binary.rs`).
#[test]
fn the_systemd_unit_forbids_core_dumps() {
    let unit = std::fs::read_to_string(deploy("kps.service")).expect("deploy/kps.service");
    let service = unit.split("[Service]").nth(1).and_then(|rest| rest.split("\n[").next()).expect("[Service]");
    assert!(service.lines().any(|line| line.trim() == "LimitCORE=0"), "{service}");
}
