//! How long one RSA key generation takes with the `rsa` crate kps uses, in this build profile.
//! Documents the trade-off behind the RSA key pool (`[keygen] rsa_pool_size`): a Nova default create
//! (RSA-2048) that misses the pool pays one of these on the request path.
//!
//! Usage: `cargo run --release --example rsa_keygen_timing -- [RUNS] [BITS]` (defaults: 20 runs, 2048 bits).
//! Prints every run's time in milliseconds, then min / median / mean / max, as `key=value` lines.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20).max(1);
    let bits: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let started = Instant::now();
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(error) = key {
            eprintln!("run {run}: RSA-{bits} generation failed: {error}");
            std::process::exit(1);
        }
        println!("run={run} ms={ms:.1}");
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    let median = if runs % 2 == 1 { times[runs / 2] } else { (times[runs / 2 - 1] + times[runs / 2]) / 2.0 };
    let mean = times.iter().sum::<f64>() / runs as f64;
    println!("bits={bits} runs={runs}");
    println!("min_ms={:.1} median_ms={median:.1} mean_ms={mean:.1} max_ms={:.1}", times[0], times[runs - 1]);
}
