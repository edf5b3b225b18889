//! Baseline for `bench/run.sh`: the cheapest axum 0.8 server we can write, on the same runtime setup as
//! `kps serve` (`tokio::runtime::Runtime::new()`, the multi-thread default), answering every request with
//! a fixed `200 application/json` body about the size of a Nova show response.
//!
//! The benchmark compares kps's show and list handlers against this server's req/s, so that the ratio
//! measures what kps adds on top of axum + hyper + tokio on the same machine.
//!
//! Usage: `cargo run --release --example trivial_axum -- PORT [BODY_BYTES]` (listens on 127.0.0.1:PORT;
//! BODY_BYTES defaults to 500).

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// A show-shaped JSON document padded (inside `public_key`) to `size` bytes when possible.
fn body(size: usize) -> Bytes {
    let document = |public_key: &str| {
        serde_json::json!({"keypair": {
            "name": "bench-show",
            "public_key": public_key,
            "fingerprint": "f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5",
            "user_id": "u-bench",
            "id": 1,
            "created_at": "2026-01-01T00:00:00.000000",
            "updated_at": null,
            "deleted": false,
            "deleted_at": null
        }})
        .to_string()
    };
    let base = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 ";
    let fixed = document(base).len();
    let padding = "x".repeat(size.saturating_sub(fixed));
    Bytes::from(document(&format!("{base}{padding}")))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(port) = args.next().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: trivial_axum PORT [BODY_BYTES]");
        return ExitCode::FAILURE;
    };
    let size = args.next().and_then(|s| s.parse::<usize>().ok()).unwrap_or(500);
    let payload = body(size);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("trivial_axum: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let handler = move || {
            let payload = payload.clone();
            async move {
                let mut response: Response = payload.into_response();
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
        };
        // A fallback, like kps's router: every path and method gets the fixed document.
        let app = Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        eprintln!("trivial_axum listening on {} ({} byte body)", listener.local_addr()?, size.max(1));
        axum::serve(listener, app).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trivial_axum: {error}");
            ExitCode::FAILURE
        }
    }
}
