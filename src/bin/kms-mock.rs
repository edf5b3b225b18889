//! `kms-mock`: a Huawei Cloud KMS v1.0 data-key API subset for development and tests (spec/kms-huawei.md §5).
//! Thin: the server is `kps::kms::mock`.

use std::process::ExitCode;

use clap::Parser;
use kps::kms::mock::{MockArgs, run};

#[tokio::main]
async fn main() -> ExitCode {
    match run(MockArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kms-mock: {error}");
            ExitCode::from(2)
        }
    }
}
