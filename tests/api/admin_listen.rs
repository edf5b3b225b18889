//! `admin_listen`: `/healthz`, `/metrics`, `/openapi.json` and `/admin/v1/*` move to their own listener (and
//! answer 404 on `listen`), while the APIs stay on `listen` only. Router-level checks, then the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Kps;
use crate::binary::free_port;

const OPERATIONS: [&str; 3] = ["/healthz", "/metrics", "/openapi.json"];

#[tokio::test]
async fn with_admin_listen_the_api_listener_hides_the_operations_endpoints() {
    let kps = Kps::with_config(|c| c.admin_listen = Some("127.0.0.1:0".into()));
    for path in OPERATIONS {
        kps.call("GET", path, &[], None).await.assert_error(404, "KPS.1010", "The resource could not be found.");
    }
    assert_eq!(kps.call("GET", "/", &[], None).await.status, 200, "version documents stay");
    assert_eq!(kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await.status, 200);
}

#[tokio::test]
async fn with_admin_listen_the_admin_api_is_answered_there_only() {
    let kps = Kps::with_config(|c| c.admin_listen = Some("127.0.0.1:0".into()));
    let admin = [("x-auth-token", "root:p:admin"), ("content-type", "application/json")];
    for path in ["/admin/v1/backup", "/admin/v1/rewrap"] {
        let body = path.ends_with("rewrap").then_some(r#"{"dry_run": true}"#);
        kps.call("POST", path, &admin, body).await.assert_error(404, "KPS.1010", "The resource could not be found.");
        let there = kps.call_admin("POST", path, &admin, body).await;
        assert_eq!(there.status, 200, "{path}: {}", String::from_utf8_lossy(&there.body));
    }
    // Without admin_listen the admin API stays on listen.
    let kps = Kps::new();
    assert_eq!(kps.call("POST", "/admin/v1/backup", &admin, None).await.status, 200);
}

fn get(url: &str) -> (u16, String) {
    let response = reqwest::blocking::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().unwrap_or_default())
}

#[test]
fn the_real_binary_serves_operations_on_admin_listen_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kps"))
        .args(["serve", "--listen", &format!("127.0.0.1:{api_port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("KPS_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("KPS_LOG", "warn")
        .env_remove("KPS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kps");
    let api = format!("http://127.0.0.1:{api_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::blocking::get(format!("{admin}/healthz")).is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "kps did not become ready on admin_listen");
        assert!(child.try_wait().expect("wait").is_none(), "kps exited: admin_listen refused?");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(get(&format!("{admin}/healthz")), (200, r#"{"status":"ok"}"#.to_owned()));
    let (status, metrics) = get(&format!("{admin}/metrics"));
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"kps_http_requests_total{route="healthz",method="GET",status="200"}"#), "{metrics}");
    assert_eq!(get(&format!("{admin}/openapi.json")).0, 200);
    assert_eq!(get(&format!("{admin}/")).0, 404, "the admin listener serves nothing else");
    assert_eq!(get(&format!("{admin}/v2.1/os-keypairs")).0, 404);

    for path in OPERATIONS {
        assert_eq!(get(&format!("{api}{path}")).0, 404, "{path} on listen");
    }
    let client = reqwest::blocking::Client::new();
    let list = client.get(format!("{api}/v2.1/os-keypairs")).header("x-auth-token", "u:p").send().expect("list");
    assert_eq!(list.status(), 200);

    // One SIGTERM stops both listeners.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}
