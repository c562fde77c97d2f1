//! Keys as openssl and `keygen` write them: each private key form of the shared vectors loads,
//! gives back the public key openssl derived from it, and every wrong file is refused with a
//! message that names what it is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use p256::ecdsa::DerSignature;
use p256::pkcs8::DecodePublicKey as _;
use pkcs8::der::{Decode as _, DecodePem as _, Encode as _};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::signature::Verifier as _;
use x509_cert::Certificate;

use super::*;
use testkit::key;

/// PEM text compared line by line, ignoring line endings and surrounding blank lines.
fn same_pem(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

#[test]
fn each_openssl_private_key_form_of_the_vectors_loads() {
    for (name, algorithm) in [
        ("rsa_private", Algorithm::RS256),
        ("rsa_private_pkcs8", Algorithm::RS256),
        ("ec_private", Algorithm::ES256),
        ("ec_private_pkcs8", Algorithm::ES256),
    ] {
        let loaded = DeviceKey::from_pem(&key(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.algorithm(), algorithm, "{name}");
    }
}

#[test]
fn a_loaded_key_gives_back_the_public_key_openssl_derived_from_it() {
    for (private, public) in [
        ("rsa_private", "rsa_public"),
        ("ec_private", "ec_public"),
        ("ec_private_pkcs8", "ec_public"),
    ] {
        let loaded = DeviceKey::from_pem(&key(private)).unwrap();
        let derived = loaded.public_pem().unwrap();
        assert!(same_pem(&derived, &key(public)), "{private}: {derived}");
    }
}

#[test]
fn a_pkcs1_rsa_private_key_loads() {
    let DeviceKey::Rsa(signing) = DeviceKey::from_pem(&key("rsa_private")).unwrap() else {
        panic!("rsa_private is an RSA key");
    };
    let pkcs1 = signing
        .as_ref()
        .as_ref()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let loaded = DeviceKey::from_pem(&pkcs1).unwrap();
    assert!(same_pem(&loaded.public_pem().unwrap(), &key("rsa_public")));
}

#[test]
fn curve_parameters_before_an_ec_key_are_skipped() {
    // What `openssl ecparam -genkey -name prime256v1` writes without -noout.
    let text = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        key("ec_private")
    );
    let loaded = DeviceKey::from_pem(&text).unwrap();
    assert!(same_pem(&loaded.public_pem().unwrap(), &key("ec_public")));
}

#[test]
fn a_key_saved_with_windows_line_endings_loads() {
    let text = key("ec_private").replace('\n', "\r\n");
    let loaded = DeviceKey::from_pem(&text).unwrap();
    assert!(same_pem(&loaded.public_pem().unwrap(), &key("ec_public")));
}

#[test]
fn a_p384_key_is_refused_naming_its_curve() {
    let err = DeviceKey::from_pem(&key("ec384_private")).unwrap_err();
    assert!(matches!(err, KeyError::WrongCurve { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("P-384"), "{message}");
    assert!(message.contains("prime256v1"), "{message}");
}

#[test]
fn a_1024_bit_rsa_key_is_refused_as_too_weak() {
    let err = DeviceKey::from_pem(&key("rsa1024_private")).unwrap_err();
    assert!(
        matches!(err, KeyError::WeakRsa { bits: 1024 }),
        "{err:?}: {err}"
    );
}

#[test]
fn public_keys_and_certificates_are_refused_as_not_private() {
    for (name, what) in [
        ("rsa_public", "a public key"),
        ("rsa_public_pkcs1", "a public key"),
        ("ec_cert", "a certificate"),
    ] {
        let err = DeviceKey::from_pem(&key(name)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("this is {what}")),
            "{name}: {message}"
        );
        assert!(message.contains("private key"), "{name}: {message}");
    }
}

#[test]
fn text_without_pem_and_encrypted_keys_are_refused_with_a_fix() {
    let err = DeviceKey::from_pem("not a key").unwrap_err();
    assert!(matches!(err, KeyError::NotPem), "{err:?}");
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = DeviceKey::from_pem(encrypted).unwrap_err();
    assert!(err.to_string().contains("openssl pkey"), "{err}");
    let truncated = "-----BEGIN PRIVATE KEY-----\nMIIB\n";
    let err = DeviceKey::from_pem(truncated).unwrap_err();
    assert!(
        err.to_string().contains("-----END PRIVATE KEY-----"),
        "{err}"
    );
}

#[test]
fn generated_keys_round_trip_through_their_pem_files() {
    for algorithm in [Algorithm::ES256, Algorithm::RS256] {
        let key = DeviceKey::generate(algorithm).unwrap();
        assert_eq!(key.algorithm(), algorithm);
        let private = key.private_pem().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = DeviceKey::from_pem(&private).unwrap();
        assert_eq!(again.public_pem().unwrap(), key.public_pem().unwrap());
    }
}

#[test]
fn a_generated_rsa_key_has_2048_bits() {
    let DeviceKey::Rsa(key) = DeviceKey::generate(Algorithm::RS256).unwrap() else {
        panic!("RS256 makes an RSA key");
    };
    assert_eq!(key.as_ref().as_ref().size() * 8, 2048);
}

#[test]
fn the_certificate_holds_the_key_and_is_signed_by_it() {
    for algorithm in [Algorithm::ES256, Algorithm::RS256] {
        let key = DeviceKey::generate(algorithm).unwrap();
        let pem = key.self_signed_certificate_pem(1_767_225_600).unwrap();
        let cert = Certificate::from_pem(pem.as_bytes()).unwrap();
        let tbs = cert.tbs_certificate();
        let spki_der = tbs.subject_public_key_info().to_der().unwrap();
        let public = pkcs8::der::pem::decode_vec(key.public_pem().unwrap().as_bytes())
            .unwrap()
            .1;
        assert_eq!(spki_der, public, "{algorithm:?}");
        assert_eq!(tbs.issuer(), tbs.subject());
        assert!(
            tbs.validity()
                .not_after
                .to_string()
                .starts_with("9999-12-31"),
            "{}",
            tbs.validity().not_after
        );
        let signed = tbs.to_der().unwrap();
        let signature = cert.signature().raw_bytes();
        match &key {
            DeviceKey::Ec(signing) => {
                let signature = DerSignature::from_bytes(signature).unwrap();
                signing.verifying_key().verify(&signed, &signature).unwrap();
            }
            DeviceKey::Rsa(signing) => {
                let signature = rsa::pkcs1v15::Signature::try_from(signature).unwrap();
                signing.verifying_key().verify(&signed, &signature).unwrap();
            }
        }
    }
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let ec = DeviceKey::from_pem(&key("ec_private")).unwrap();
    assert!(ec.check_algorithm(None).is_ok());
    assert!(ec.check_algorithm(Some(Algorithm::ES256)).is_ok());
    let message = ec
        .check_algorithm(Some(Algorithm::RS256))
        .unwrap_err()
        .to_string();
    assert!(message.contains("EC P-256 key signs ES256"), "{message}");
}

#[test]
fn debug_output_shows_the_algorithm_and_nothing_of_the_key() {
    let key = DeviceKey::from_pem(&key("ec_private")).unwrap();
    assert_eq!(format!("{key:?}"), "DeviceKey(ES256)");
}

#[test]
fn the_vectors_public_keys_parse_as_the_verifying_keys_tests_use() {
    // The token tests verify with these; make sure they mean what the names say.
    assert!(p256::ecdsa::VerifyingKey::from_public_key_pem(&key("ec_public")).is_ok());
    assert!(rsa::PublicKey::from_public_key_pem(&key("rsa_public")).is_ok());
    let cert = Certificate::from_pem(key("ec_cert").as_bytes()).unwrap();
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    assert!(p256::ecdsa::VerifyingKey::from_public_key_der(&spki).is_ok());
    let _ = pkcs8::SubjectPublicKeyInfoRef::from_der(&spki).unwrap();
}
