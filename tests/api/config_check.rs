//! `kps config check` (README "Config tools"): the configuration as serve loads it, its files and their
//! modes checked, the effective settings printed with every secret redacted; exit 1 with the reason.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SK: &str = "sk-value-that-must-never-be-printed";
const PG_URL: &str = "postgres://kps:pg-password-never-printed@db/kps";
const TOKEN: &str = "static-token-never-printed";

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A config naming a tokens file, a policy file and inline secrets; `tokens_mode` is the tokens file's mode.
fn config(dir: &Path, tokens_mode: u32, policy: &str) -> PathBuf {
    let tokens =
        write(dir, "tokens.toml", &format!("[tokens.\"{TOKEN}\"]\nuser_id = \"u\"\nproject_id = \"p\"\n"), tokens_mode);
    let policy = write(dir, "policy.yaml", policy, 0o644);
    let text = format!(
        "data_dir = \"{data}\"\n[auth]\nmode = \"static\"\ntokens_file = \"{tokens}\"\n[policy]\nfile = \"{policy}\"\n\
         [kms]\nsk = \"{SK}\"\n[store]\npostgres_url = \"{PG_URL}\"\n",
        data = dir.join("data").display(),
        tokens = tokens.display(),
        policy = policy.display(),
    );
    write(dir, "kps.toml", &text, 0o644)
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["config", "check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run kps")
}

fn assert_no_secret(output: &Output) {
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    for secret in [SK, PG_URL, "pg-password-never-printed", TOKEN, "env-sk-never-printed"] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
}

#[test]
fn a_sound_config_prints_its_effective_settings_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        0o600,
        "\"os_compute_api:os-keypairs:index\": \"(rule:context_is_admin) or user_id:%(user_id)s\"\n",
    );
    let output = check(&config, &[("KPS_LISTEN", "127.0.0.1:9999")]);
    assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = String::from_utf8(output.stdout).expect("utf-8");
    assert!(report.starts_with("# kps config check: ok\n"), "{report}");
    assert!(report.contains("tokens.toml: secret file, mode ok"), "{report}");
    assert!(report.contains("policy.yaml: parses"), "{report}");
    // Environment over file, as serve loads it.
    assert!(report.contains("listen = \"127.0.0.1:9999\"\n"), "{report}");
    assert!(report.contains("sk = \"[REDACTED]\"\n"), "{report}");
    assert!(report.contains("postgres_url = \"[REDACTED]\"\n"), "{report}");
}

#[test]
fn a_wrong_file_fails_with_the_reason_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let readable = config(dir.path(), 0o644, "");
    let output = check(&readable, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_no_secret(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.tokens_file") && stderr.contains("mode 0644"), "{stderr}");
    assert!(output.stdout.is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let bad_policy = config(dir.path(), 0o600, "\"kps:keypairs:show\": \"(role:a\"\n");
    let output = check(&bad_policy, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid rule \"(role:a\" for kps:keypairs:show"));

    let dir = tempfile::tempdir().expect("tempdir");
    let sound = config(dir.path(), 0o600, "");
    let missing = dir.path().join("missing.key");
    let output = check(&sound, &[("KPS_MASTER_KEY_FILE", missing.to_str().expect("utf-8"))]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.key: no such file"));

    let shared_audit = write(dir.path(), "audit.jsonl", "", 0o640);
    let output = check(&sound, &[("KPS_AUDIT_FILE", shared_audit.to_str().expect("utf-8"))]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audit.file") && stderr.contains("mode 0640"), "{stderr}");
}
