//! oslo.policy files end to end (README "Policy files"): a `kps` process started with Nova's keypair rules
//! in YAML enforces them over HTTP, and the `kps policy sample` / `kps policy check` commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::binary::Server;

/// Nova's keypair rules as its sample policy writes them, plus an override of the named rule they use.
const NOVA_RULES_WITH_OWN_ADMIN: &str = "\
\"os_compute_api:os-keypairs:index\": \"(rule:context_is_admin) or user_id:%(user_id)s\"
\"os_compute_api:os-keypairs:create\": \"(rule:context_is_admin) or user_id:%(user_id)s\"
\"os_compute_api:os-keypairs:delete\": \"(rule:context_is_admin) or user_id:%(user_id)s\"
\"os_compute_api:os-keypairs:show\": \"(rule:context_is_admin) or user_id:%(user_id)s\"
\"context_is_admin\": \"role:cloud_admin\"
";

fn policy_file(dir: &Path) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, NOVA_RULES_WITH_OWN_ADMIN).expect("write policy");
    path
}

fn get_alices_key(server: &Server, token: &str) -> u16 {
    let client = reqwest::blocking::Client::new();
    let answer = client
        .get(format!("{}/v2.1/os-keypairs/k?user_id=alice", server.url))
        .header("X-Auth-Token", token)
        .header("X-OpenStack-Nova-API-Version", "2.10")
        .send()
        .expect("GET");
    answer.status().as_u16()
}

#[test]
fn a_server_started_with_an_oslo_policy_file_enforces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path());
    let data = dir.path().join("data");
    let server = Server::start_with_env(&data, &[("KPS_POLICY_FILE", policy.to_str().expect("utf-8"))]);
    let created = reqwest::blocking::Client::new()
        .post(format!("{}/v2.1/os-keypairs", server.url))
        .header("X-Auth-Token", "alice:p")
        .header("Content-Type", "application/json")
        .body(r#"{"keypair": {"name": "k"}}"#)
        .send()
        .expect("POST");
    assert_eq!(created.status().as_u16(), 200);
    assert_eq!(get_alices_key(&server, "alice:p"), 200);
    assert_eq!(get_alices_key(&server, "bob:p"), 403);
    // The file made `cloud_admin` the admin role: `admin` alone is no longer enough.
    assert_eq!(get_alices_key(&server, "root:q:admin"), 403);
    assert_eq!(get_alices_key(&server, "root:q:cloud_admin"), 200);
}

fn kps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kps")).args(args).env_remove("KPS_POLICY_FILE").output().expect("run kps")
}

#[test]
fn policy_sample_writes_every_action_with_its_default() {
    let output = kps(&["policy", "sample"]);
    assert!(output.status.success());
    let sample = String::from_utf8(output.stdout).expect("utf-8");
    for action in kps::api::policy::Action::ALL {
        assert!(sample.contains(&format!("#\"{}\": \"", action.name())), "{}", action.name());
    }
    assert!(sample.contains("# List a user's key pairs (Nova)\n# GET  /v2.1/os-keypairs\n"), "{sample}");
}

#[test]
fn policy_check_answers_allowed_or_denied_by_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_file(dir.path());
    let policy = policy.to_str().expect("utf-8");
    let check = |extra: &[&str]| {
        let mut args = vec!["policy", "check", "--policy", policy, "--action", "os_compute_api:os-keypairs:show"];
        args.extend_from_slice(extra);
        kps(&args)
    };
    let own = check(&["--user", "alice", "--project", "p"]);
    assert_eq!(
        (own.status.code(), String::from_utf8_lossy(&own.stdout).trim()),
        (Some(0), "allowed: os_compute_api:os-keypairs:show")
    );
    let other = check(&["--user", "bob", "--project", "p", "--target-user", "alice", "--target-project", "p"]);
    assert_eq!(
        (other.status.code(), String::from_utf8_lossy(&other.stdout).trim()),
        (Some(1), "denied: os_compute_api:os-keypairs:show")
    );
    let admin = check(&["--user", "root", "--project", "q", "--roles", "member,cloud_admin", "--target-user", "alice"]);
    assert_eq!(admin.status.code(), Some(0));
    // Without --policy: the configured policy.file, or the defaults.
    let default = kps(&["policy", "check", "--action", "kps:admin:backup", "--user", "u", "--project", "p"]);
    assert_eq!(default.status.code(), Some(1));
    let unknown = kps(&["policy", "check", "--action", "nope", "--user", "u", "--project", "p"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown action \"nope\""));
}
