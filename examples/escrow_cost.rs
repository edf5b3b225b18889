//! CPU cost of the steps an escrowed import adds to a plain one, per call, in-process (no HTTP, no store):
//! parsing the private key and deriving its public half (the match check), and sealing it with the `default`
//! encryptor. Used to explain `bench/custody.sh` figures (BENCHMARKS.md).
//!
//! `cargo run --release --example escrow_cost -- bench/fixtures/ed25519_vector_openssh.key bench/fixtures/rsa2048_pkcs1.pem`

use std::time::Instant;

use kps::custody::{Aad, LocalEncryptor, MasterKeyring};
use kps::keypair::parse::parse_private_key;
use kps::model::PrivateKeyText;
use zeroize::Zeroizing;

const ROUNDS: u32 = 2000;

fn per_call(label: &str, mut f: impl FnMut()) {
    for _ in 0..ROUNDS / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    println!("{label}: {:.1} µs per call", started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS));
}

fn main() {
    let dir = std::env::temp_dir().join(format!("kps-escrow-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keyring = MasterKeyring::load_or_create(&dir.join("master.key"), false).expect("keyring");
    let local = LocalEncryptor::new(keyring);
    let aad = Aad { project_id: "p-bench".into(), user_id: "u-bench".into(), name: "k".into(), record_id: 42 };
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).expect("private key file");
        per_call(&format!("{path}: parse + derive public half"), || {
            parse_private_key(&text, kps::keypair::DEFAULT_MIN_RSA_BITS).expect("parses");
        });
        let secret = PrivateKeyText::new(Zeroizing::new(text.clone()));
        per_call(&format!("{path}: seal (default encryptor)"), || {
            local.seal(&aad, &secret).expect("seals");
        });
    }
    std::fs::remove_dir_all(&dir).ok();
}
