//! Create-body validation through the API: Nova's literal messages, codes and the order in which problems
//! are reported (nova-keypairs.md §5.1, errors.md §4).

use crate::Kps;

const PATTERN_21: &str = r"'^[_\\- a-zA-Z0-9]+$'";

async fn create_error(kps: &Kps, version: Option<&str>, body: &str) -> (u16, String, String) {
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", version, Some(body)).await;
    let json = answer.json();
    (
        answer.status.as_u16(),
        json["error_code"].as_str().unwrap_or("").to_owned(),
        json["error_msg"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn schema_errors_table() {
    let kps = Kps::new();
    let table: &[(Option<&str>, &str, &str, &str)] = &[
        (None, "", "KPS.1001", "None is not of type 'object'"),
        (None, "null", "KPS.1001", "None is not of type 'object'"),
        (None, "[]", "KPS.1001", "[] is not of type 'object'"),
        (None, "{}", "KPS.1001", "'keypair' is a required property"),
        (
            None,
            r#"{"keypair": {"name": "a"}, "x": 1}"#,
            "KPS.1001",
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        (
            None,
            r#"{"keypair": "x"}"#,
            "KPS.1001",
            "Invalid input for field/attribute keypair. Value: x. 'x' is not of type 'object'",
        ),
        (
            None,
            r#"{"keypair": {}}"#,
            "KPS.1001",
            "Invalid input for field/attribute keypair. Value: {}. 'name' is a required property",
        ),
        (
            None,
            r#"{"keypair": {"name": "a", "type": "ssh"}}"#,
            "KPS.1001",
            "Invalid input for field/attribute keypair. Value: {'name': 'a', 'type': 'ssh'}. Additional properties are not allowed ('type' was unexpected)",
        ),
        (
            Some("2.2"),
            r#"{"keypair": {"name": "a", "user_id": "u"}}"#,
            "KPS.1001",
            "Invalid input for field/attribute keypair. Value: {'name': 'a', 'user_id': 'u'}. Additional properties are not allowed ('user_id' was unexpected)",
        ),
        (
            Some("2.92"),
            r#"{"keypair": {"name": "a"}}"#,
            "KPS.1001",
            "Invalid input for field/attribute keypair. Value: {'name': 'a'}. 'public_key' is a required property",
        ),
        (
            Some("2.92"),
            r#"{"keypair": {"name": "a", "public_key": null}}"#,
            "KPS.1001",
            "Invalid input for field/attribute public_key. Value: None. None is not of type 'string'",
        ),
        (
            None,
            r#"{"keypair": {"name": "a", "public_key": 5}}"#,
            "KPS.1001",
            "Invalid input for field/attribute public_key. Value: 5. 5 is not of type 'string'",
        ),
        (
            Some("2.2"),
            r#"{"keypair": {"name": "a", "type": "pgp"}}"#,
            "KPS.1001",
            "Invalid input for field/attribute type. Value: pgp. 'pgp' is not one of ['ssh', 'x509']",
        ),
        (
            None,
            r#"{"keypair": {"name": "a", "algorithm": "DSA"}}"#,
            "KPS.1001",
            "Invalid input for field/attribute algorithm. Value: DSA. 'DSA' is not one of ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ED25519', 'EC_P256', 'EC_P384']",
        ),
        (
            None,
            r#"{"keypair": {"name": null}}"#,
            "KPS.1101",
            "Invalid input for field/attribute name. Value: None. None is not of type 'string'",
        ),
        (
            None,
            r#"{"keypair": {"name": ""}}"#,
            "KPS.1101",
            "Invalid input for field/attribute name. Value: . '' should be non-empty",
        ),
        (
            None,
            r#"{"keypair": {"name": " a"}}"#,
            "KPS.1101",
            "An invalid 'name' value was provided. The name must be: printable characters. Can not start or end with whitespace.",
        ),
        (
            None,
            r#"{"keypair": {"name": "bad/name"}}"#,
            "KPS.1101",
            "Invalid input for field/attribute name. Value: bad/name. 'bad/name' does not match '^[_\\\\- a-zA-Z0-9]+$'",
        ),
        (
            Some("2.91"),
            r#"{"keypair": {"name": "a@b.c"}}"#,
            "KPS.1101",
            "Invalid input for field/attribute name. Value: a@b.c. 'a@b.c' does not match '^[_\\\\- a-zA-Z0-9]+$'",
        ),
        (
            Some("2.92"),
            r#"{"keypair": {"name": "a/b", "public_key": "x"}}"#,
            "KPS.1101",
            "Invalid input for field/attribute name. Value: a/b. 'a/b' does not match '^[_\\\\-\\\\@\\\\. a-zA-Z0-9]+$'",
        ),
    ];
    for (version, body, code, message) in table {
        let (status, got_code, got_message) = create_error(&kps, *version, body).await;
        assert_eq!((status, got_code.as_str(), got_message.as_str()), (400, *code, *message), "{version:?} {body}");
    }
    assert!(PATTERN_21.contains("\\\\"));
}

#[tokio::test]
async fn name_length_limit_is_255_characters() {
    let kps = Kps::new();
    let long = "a".repeat(256);
    let (_, code, message) = create_error(&kps, None, &format!(r#"{{"keypair": {{"name": "{long}"}}}}"#)).await;
    assert_eq!(code, "KPS.1101");
    assert_eq!(message, format!("Invalid input for field/attribute name. Value: {long}. '{long}' is too long"));
}

#[tokio::test]
async fn first_failing_property_wins_in_nova_order() {
    let kps = Kps::new();
    // name before type before public_key.
    let body = r#"{"keypair": {"name": "", "type": "bad", "public_key": 1}}"#;
    assert_eq!(create_error(&kps, Some("2.2"), body).await.1, "KPS.1101");
    let body = r#"{"keypair": {"name": "ok", "type": "bad", "public_key": 1}}"#;
    assert_eq!(
        create_error(&kps, Some("2.2"), body).await.2,
        "Invalid input for field/attribute type. Value: bad. 'bad' is not one of ['ssh', 'x509']"
    );
    // Required before additional properties.
    let body = r#"{"keypair": {"bogus": 1}}"#;
    assert!(create_error(&kps, None, body).await.2.ends_with("'name' is a required property"));
}

#[tokio::test]
async fn invalid_public_keys_are_1201_and_unsupported_ones_1203() {
    let kps = Kps::new();
    let invalid = [
        "garbage",
        "",
        "ssh-ed25519",
        "ssh-ed25519 !!!notbase64",
        "ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        "ssh-ed25519  AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3ch",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n-----END PUBLIC KEY-----\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4\nssh-ed25519 AAAA",
    ];
    for key in invalid {
        let body = serde_json::json!({"keypair": {"name": "k", "public_key": key}}).to_string();
        let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body)).await;
        answer.assert_error(400, "KPS.1201", "Keypair data is invalid: failed to generate fingerprint");
    }
}

#[tokio::test]
async fn invalid_certificates_are_1202() {
    let kps = Kps::new();
    let body = serde_json::json!({"keypair": {"name": "k", "type": "x509", "public_key": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(&body.to_string())).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error_code"], "KPS.1202");
    let message = answer.json()["error_msg"].as_str().unwrap_or("").to_owned();
    assert!(
        message.starts_with("Keypair data is invalid: failed to generate X509 fingerprint. Error message: "),
        "{message}"
    );
}

#[tokio::test]
async fn quota_is_checked_before_key_parsing_and_duplicates() {
    let kps = Kps::with_config(|c| c.quota.key_pairs = 2);
    kps.import("u:p", "a", crate::ED25519_VECTOR).await;
    kps.import("u:p", "b", crate::ED25519_VECTOR).await;
    for public_key in [crate::ED25519_VECTOR, "garbage"] {
        let body = serde_json::json!({"keypair": {"name": "a", "public_key": public_key}}).to_string();
        let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body)).await;
        answer.assert_error(403, "KPS.1501", "Quota exceeded, too many key pairs.");
    }
    // The quota is per owner user: another user is not affected, and an admin creating for the full user is.
    kps.import("v:p", "a", crate::ED25519_VECTOR).await;
    let body =
        serde_json::json!({"keypair": {"name": "c", "user_id": "u", "public_key": crate::ED25519_VECTOR}}).to_string();
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "admin:p:admin", Some("2.10"), Some(&body)).await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn unlimited_quota_is_minus_one() {
    let kps = Kps::with_config(|c| c.quota.key_pairs = -1);
    for i in 0..5 {
        kps.import("u:p", &format!("k{i}"), crate::ED25519_VECTOR).await;
    }
}

#[tokio::test]
async fn key_protection_that_would_escrow_is_refused_when_custody_is_disabled() {
    let kps = Kps::with_config(|c| c.custody.enabled = false);
    let generate = r#"{"keypair": {"name": "k", "key_protection": {"encryption": {"type": "default"}}}}"#;
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(generate)).await;
    answer.assert_error(403, "KPS.1901", "Private key custody is disabled on this server");
    let list = kps.nova("GET", "/v2.1/os-keypairs", "u:p", None, None).await;
    assert_eq!(list.json()["keypairs"], serde_json::json!([]), "nothing stored");
    // An import whose key_protection escrows nothing is still allowed.
    let body = serde_json::json!({"keypair": {"name": "k", "public_key": crate::ED25519_VECTOR,
        "key_protection": {"encryption": {"type": "default"}}}});
    assert_eq!(kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await.status, 200);
}

#[tokio::test]
async fn key_protection_without_private_key_on_import_is_validated_and_ignored() {
    let kps = Kps::new();
    let body = serde_json::json!({"keypair": {"name": "k", "public_key": crate::ED25519_VECTOR,
        "key_protection": {"encryption": {"type": "default"}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["keypair"].as_object().map(|o| o.len()), Some(4), "only the Nova fields");
    let body = serde_json::json!({"keypair": {"name": "k2", "public_key": crate::ED25519_VECTOR,
        "key_protection": {"encryption": {"type": "kms", "kms_key_name": "kps-escrow"}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await;
    answer.assert_error(400, "KPS.1402", "Encryption type kms is not available: no KMS is configured");
    let body = serde_json::json!({"keypair": {"name": "k3", "public_key": crate::ED25519_VECTOR,
        "key_protection": {"encryption": {}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await;
    assert_eq!(answer.json()["error_code"], "KPS.1401");
}

#[tokio::test]
async fn default_encryption_can_be_disabled() {
    let kps = Kps::with_config(|c| c.custody.allow_default = false);
    let body = serde_json::json!({"keypair": {"name": "k", "public_key": crate::ED25519_VECTOR,
        "key_protection": {"encryption": {"type": "default"}}}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await;
    answer.assert_error(400, "KPS.1403", "Encryption type default is disabled on this server");
}

#[tokio::test]
async fn property_checks_come_before_required_and_unexpected_properties_as_in_nova() {
    let kps = Kps::new();
    let name_error = "Invalid input for field/attribute name. Value: a/b. 'a/b' does not match '^[_\\\\- a-zA-Z0-9]+$'";
    let type_error = "Invalid input for field/attribute type. Value: rsa. 'rsa' is not one of ['ssh', 'x509']";
    let table: &[(&str, &str, &str)] = &[
        (
            "2.2",
            r#"{"keypair": "abc", "extra": 1}"#,
            "Invalid input for field/attribute keypair. Value: abc. 'abc' is not of type 'object'",
        ),
        ("2.2", r#"{"keypair": {"name": "a/b"}, "extra": 1}"#, name_error),
        ("2.2", r#"{"keypair": {"name": "a/b", "foo": 1}}"#, name_error),
        ("2.2", r#"{"keypair": {"name": "ok", "type": "rsa", "foo": 1}}"#, type_error),
        (
            "2.2",
            r#"{"keypair": {"name": "ok", "public_key": 1, "foo": 1}}"#,
            "Invalid input for field/attribute public_key. Value: 1. 1 is not of type 'string'",
        ),
        ("2.2", r#"{"keypair": {"type": "rsa"}}"#, type_error),
        ("2.1", r#"{"keypair": {"name": "a/b", "type": "ssh"}}"#, name_error),
        (
            "2.2",
            r#"{"keypair": {"foo": 1}}"#,
            "Invalid input for field/attribute keypair. Value: {'foo': 1}. 'name' is a required property",
        ),
    ];
    for (version, body, message) in table {
        let (_, _, got) = create_error(&kps, Some(version), body).await;
        assert_eq!(got, *message, "{version} {body}");
    }
    let (_, _, got) = create_error(&kps, Some("2.92"), r#"{"keypair": {"name": "a/b"}}"#).await;
    assert!(got.contains("does not match '^[_\\\\-\\\\@\\\\. a-zA-Z0-9]+$'"), "{got}");
}

#[tokio::test]
async fn legacy_v2_reports_an_empty_name_with_the_v2_name_message() {
    let kps = Kps::new();
    let body = serde_json::json!({"keypair": {"name": "", "public_key": crate::ED25519_VECTOR}}).to_string();
    let answer = kps.nova("POST", "/v2/p/os-keypairs", "u:p", None, Some(&body)).await;
    answer.assert_error(
        400,
        "KPS.1101",
        "An invalid 'name' value was provided. The name must be: printable characters with at least one non space character",
    );
}

const RSA_1024_PUBLIC_KEY: &str = include_str!("../../src/keypair/testdata/rsa1024.pub");
const RSA_1024_PRIVATE_KEY: &str = include_str!("../../src/keypair/testdata/rsa1024_pkcs1.pem");
const RSA_1024_CERTIFICATE: &str = include_str!("../../src/keypair/testdata/cert_rsa1024.pem");

/// An `ssh-rsa` line whose modulus has `bits` bits (odd, not a real key: no private half is needed for an
/// import of the public key alone), built by hand since ssh-keygen stops at 16384.
fn rsa_public_key_line(bits: usize) -> String {
    use base64::Engine;
    let len = bits.div_ceil(8);
    let mut modulus = vec![0xc5u8; len];
    modulus[0] = 1 << (bits - (len - 1) * 8 - 1); // the top bit is bit `bits - 1`
    if modulus[0] & 0x80 != 0 {
        modulus.insert(0, 0); // an mpint with its sign bit set would be negative
    }
    let string = |bytes: &[u8]| [u32::try_from(bytes.len()).expect("len").to_be_bytes().as_slice(), bytes].concat();
    let blob = [string(b"ssh-rsa"), string(&[0x01, 0x00, 0x01]), string(&modulus)].concat();
    format!("ssh-rsa {} big", base64::engine::general_purpose::STANDARD.encode(blob))
}

fn out_of_range(bits: usize, min: usize) -> String {
    format!("Keypair data is invalid: RSA key of {bits} bits is outside the accepted range {min}-16384")
}

#[tokio::test]
async fn rsa_keys_below_2048_or_above_16384_bits_are_1204() {
    let kps = Kps::new();
    for (key_type, public_key, bits) in [
        ("ssh", RSA_1024_PUBLIC_KEY.trim_end().to_owned(), 1024),
        ("x509", RSA_1024_CERTIFICATE.to_owned(), 1024),
        ("ssh", rsa_public_key_line(16385), 16385),
        ("ssh", rsa_public_key_line(16392), 16392),
    ] {
        let body = serde_json::json!({"keypair": {"name": "k", "type": key_type, "public_key": public_key}});
        let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", Some("2.2"), Some(&body.to_string())).await;
        answer.assert_error(400, "KPS.1204", &out_of_range(bits, 2048));
        let v3 = kps.call("POST", "/v3/p/keypairs", &[("x-auth-token", "u:p")], Some(&body.to_string())).await;
        v3.assert_error(400, "KPS.1204", &out_of_range(bits, 2048));
    }
    // The edges of the range are accepted.
    kps.import("u:p", "rsa-2048", crate::RSA_PUBLIC_KEY.trim_end()).await;
    kps.import("u:p", "rsa-16384", &rsa_public_key_line(16384)).await;
    // A private key offered for escrow is held to the range too (before the match with the public key).
    let body = serde_json::json!({"keypair": {"name": "escrow", "public_key": crate::RSA_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": RSA_1024_PRIVATE_KEY, "encryption": {"type": "default"}}}});
    let answer = kps.call("POST", "/v3/p/keypairs", &[("x-auth-token", "u:p")], Some(&body.to_string())).await;
    answer.assert_error(400, "KPS.1204", &out_of_range(1024, 2048));
    let batch = serde_json::json!([{"keypair": {"name": "weak", "public_key": RSA_1024_PUBLIC_KEY.trim_end()}}]);
    let batch = batch.to_string();
    let answer = kps.call("POST", "/v3/p/keypairs/batch-import", &[("x-auth-token", "u:p")], Some(&batch)).await;
    assert_eq!(answer.json()["failed_keypairs"][0]["failed_reason"], format!("KPS.1204: {}", out_of_range(1024, 2048)));
}

#[tokio::test]
async fn a_raised_min_rsa_bits_refuses_2048_bit_imports_and_generations() {
    let kps = Kps::with_config(|c| c.keys.min_rsa_bits = 3072);
    let body = serde_json::json!({"keypair": {"name": "k", "public_key": crate::RSA_PUBLIC_KEY.trim_end()}});
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&body.to_string())).await;
    answer.assert_error(400, "KPS.1204", &out_of_range(2048, 3072));
    let explicit = serde_json::json!({"keypair": {"name": "g", "algorithm": "RSA_2048"}});
    let answer = kps.call("POST", "/v3/p/keypairs", &[("x-auth-token", "u:p")], Some(&explicit.to_string())).await;
    answer.assert_error(400, "KPS.1204", &out_of_range(2048, 3072));
    // Without an algorithm, generation uses the shortest RSA size the minimum allows.
    let answer = kps.nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(r#"{"keypair": {"name": "gen"}}"#)).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let show = kps.call("GET", "/v3/p/keypairs/gen", &[("x-auth-token", "u:p")], None).await;
    assert_eq!(show.json()["keypair"]["algorithm"], "RSA_3072");
}

/// An escrowed RSA private key with a 16,392-bit modulus is refused for its size (KPS.1204), not as
/// unparsable, and before any consistency check: its other numbers are nonsense. Built here, DER by hand.
#[tokio::test]
async fn an_rsa_private_key_longer_than_16384_bits_is_1204() {
    use base64::Engine as _;
    use rsa::pkcs1::der::{Encode, asn1::UintRef};
    let modulus = [0xc3u8; 2049];
    let small = |bytes: &'static [u8]| UintRef::new(bytes).expect("uint");
    let key = rsa::pkcs1::RsaPrivateKey {
        modulus: UintRef::new(&modulus).expect("uint"),
        public_exponent: small(&[1, 0, 1]),
        private_exponent: small(&[3]),
        prime1: small(&[5]),
        prime2: small(&[7]),
        exponent1: small(&[1]),
        exponent2: small(&[1]),
        coefficient: small(&[1]),
        other_prime_infos: None,
    };
    let body = base64::engine::general_purpose::STANDARD.encode(key.to_der().expect("der"));
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    let label = ["RSA", "PRIVATE", "KEY"].join(" ");
    let pem = format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"));
    let request = serde_json::json!({"keypair": {"name": "big", "public_key": crate::RSA_PUBLIC_KEY.trim_end(),
        "key_protection": {"private_key": pem, "encryption": {"type": "default"}}}});
    let answer = Kps::new().nova("POST", "/v2.1/os-keypairs", "u:p", None, Some(&request.to_string())).await;
    answer.assert_error(400, "KPS.1204", &out_of_range(16392, 2048));
}
