//! kps — a key pair service for private clouds.
//!
//! It serves the OpenStack Nova `os-keypairs` API and the Huawei KPS V3 custody API over the same records.
//! Data flows one way (design.md): HTTP edge (`api`) → use cases (`service`) → `custody` → `kms`, and
//! `service` → `store`; every layer shares the domain types of `model`. `app` wires them together.

#![forbid(unsafe_code)]

pub mod api;
mod app;
pub mod atomic_file;
pub mod audit_file;
pub mod commands;
pub mod config;
pub mod connections;
pub mod custody;
pub mod datadir;
pub mod keypair;
pub mod kms;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod page_cache;
pub mod process;
pub mod service;
pub mod signing;
pub mod store;
pub mod tls;

pub use api::{AppState, admin_app, app};
pub use app::{
    ServeError, StartupKeyring, checked_service, open_store, read_master_keyring, serve, service, service_with_keyring,
    state, state_with_keyring,
};
