//! A small, bounded pool of pre-generated RSA-2048 keys, so that the Nova default create (RSA-2048) does
//! not wait for prime generation.
//!
//! Trade-off (README, "Key generation"): up to `capacity + 1` unused private keys live in process memory
//! (never on disk, never logged, zeroized on drop by `rsa::RsaPrivateKey`); a key leaves the pool exactly
//! once and is never handed out twice. One background thread refills the pool; when it is empty a request
//! generates its own key, so the pool only ever makes creates faster.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::KeypairError;
use super::generate::generate_rsa;

const POOL_KEY_BITS: usize = 2048;

#[derive(Clone)]
pub struct RsaKeyPool {
    keys: Option<Arc<Mutex<Receiver<rsa::RsaPrivateKey>>>>,
}

impl RsaKeyPool {
    /// A pool holding up to `capacity` keys, filled by a background thread; `0` disables pooling.
    pub fn new(capacity: usize) -> Self {
        if capacity == 0 {
            return Self::disabled();
        }
        let (sender, receiver) = sync_channel(capacity);
        let spawned = std::thread::Builder::new().name("kps-rsa-pool".into()).spawn(move || fill(&sender));
        if let Err(error) = spawned {
            tracing::warn!(%error, "RSA key pool disabled: cannot start its thread");
            return Self::disabled();
        }
        Self { keys: Some(Arc::new(Mutex::new(receiver))) }
    }

    /// No pool: every request generates its own key.
    pub fn disabled() -> Self {
        Self { keys: None }
    }

    /// A fresh RSA-2048 key: from the pool if one is ready, else generated now (off the async runtime).
    pub async fn take(&self) -> Result<rsa::RsaPrivateKey, KeypairError> {
        if let Some(key) = self.keys.as_ref().and_then(|keys| keys.lock().ok()?.try_recv().ok()) {
            return Ok(key);
        }
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| generate_rsa(POOL_KEY_BITS)))
            .await
            .map_err(|e| KeypairError::Generation(e.to_string()))?
    }
}

/// Generates keys until the pool is dropped (the receiver gone), blocking while the pool is full.
fn fill(sender: &SyncSender<rsa::RsaPrivateKey>) {
    loop {
        let key = match generate_rsa(POOL_KEY_BITS) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(%error, "RSA key pool stops");
                return;
            }
        };
        match sender.try_send(key) {
            Ok(()) => {}
            Err(TrySendError::Full(key)) => {
                if sender.send(key).is_err() {
                    return;
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

    #[tokio::test]
    async fn keys_from_the_pool_are_distinct_2048_bit_keys() {
        let pool = RsaKeyPool::new(2);
        let a = pool.take().await.expect("key");
        let b = pool.take().await.expect("key");
        assert_eq!(a.n().bits(), 2048);
        assert_ne!(a.n(), b.n());
    }

    #[tokio::test]
    async fn a_disabled_pool_still_generates() {
        let key = RsaKeyPool::disabled().take().await.expect("key");
        assert_eq!(key.n().bits(), 2048);
    }
}
