//! Nova's key pair fingerprints (nova-keypairs.md §6.1): MD5 of the decoded SSH public key blob for `ssh`
//! key pairs and SHA-1 of the DER certificate for `x509`, both as lowercase hex bytes joined by `:`.
//! Clients compare these strings with `ssh-keygen -l -E md5` and `openssl x509 -fingerprint -sha1`.

use md5::{Digest, Md5};
use sha1::Sha1;
use std::fmt::Write;

/// Fingerprint of an `ssh` key pair: MD5 over the base64-decoded second field of the public key line
/// (47 characters, e.g. `f1:02:17:de:ef:c1:30:83:11:8b:82:a0:0e:67:7f:d5`).
pub fn ssh_fingerprint(blob: &[u8]) -> String {
    colon_hex(&Md5::digest(blob))
}

/// Fingerprint of an `x509` key pair: SHA-1 over the DER certificate (59 characters).
pub fn x509_fingerprint(certificate_der: &[u8]) -> String {
    colon_hex(&Sha1::digest(certificate_der))
}

fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_fingerprint_is_47_chars_of_lowercase_colon_hex() {
        let fingerprint = ssh_fingerprint(b"");
        assert_eq!(fingerprint, "d4:1d:8c:d9:8f:00:b2:04:e9:80:09:98:ec:f8:42:7e");
        assert_eq!(fingerprint.len(), 47);
    }

    #[test]
    fn x509_fingerprint_is_59_chars_of_lowercase_colon_hex() {
        let fingerprint = x509_fingerprint(b"abc");
        assert_eq!(fingerprint, "a9:99:3e:36:47:06:81:6a:ba:3e:25:71:78:50:c2:6c:9c:d0:d8:9d");
        assert_eq!(fingerprint.len(), 59);
    }
}
