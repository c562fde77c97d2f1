//! Hostile tokens: forged, algorithm-confused, expired, from the future, for another project,
//! stretched, truncated, re-encoded, oversized. Each is tried on HTTP (`401` naming the cause)
//! and as an MQTT password (CONNACK 4, the bridge's answer to any refused token), and a token
//! that only adds header fields the service must ignore (`kid`, `jku`) is accepted on both.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use reqwest::header::AUTHORIZATION;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use serde_json::{Value, json};

use super::{DEVICE, REG, Suite, Target, refused};
use crate::support::PROJECT;
use crate::support::device::Signer;
use crate::support::mqtt::{Raw, client_id};

/// A token case: its name, the token, and the words its `401` must hold (`None`: accepted).
type TokenCase = (&'static str, String, Option<&'static [&'static str]>);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(iat: i64, exp: i64) -> Vec<u8> {
    json!({"iat": iat, "exp": exp, "aud": PROJECT})
        .to_string()
        .into_bytes()
}

/// `header.claims.signature` with every part given as is.
fn assemble(header: &Value, claims: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims),
        b64(signature)
    )
}

fn cases(rsa: &Signer) -> Vec<TokenCase> {
    let now = Timestamp::now().as_second();
    let good = claims(now - 60, now + 3600);
    let rs256 = br#"{"alg":"RS256","typ":"JWT"}"#;
    let fresh = rsa.fresh();
    let (input, signature) = fresh.rsplit_once('.').unwrap();
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
    flipped[10] ^= 1;
    let (header_part, _) = input.split_once('.').unwrap();
    let widened = format!(
        "{header_part}.{}.{signature}",
        b64(&claims(now - 60, now + 86_000))
    );
    let public_pem = crate::support::key("rsa_public");
    let hs256 = {
        use aws_lc_rs::hmac;
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let input = format!("{header}.{}", b64(&good));
        let key = hmac::Key::new(hmac::HMAC_SHA256, public_pem.as_bytes());
        format!(
            "{input}.{}",
            b64(hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let with = |header: &[u8], claims: &[u8]| rsa.signed(header, claims);
    vec![
        (
            "garbage",
            "not-a-jwt".to_owned(),
            Some(&["well-formed JWT"][..]),
        ),
        (
            "alg none, no signature",
            assemble(&json!({"alg": "none"}), &good, b""),
            Some(&["none", "RS256 and ES256"]),
        ),
        (
            "HS256 keyed with the device's public key",
            hs256,
            Some(&["HS256", "RS256 and ES256"]),
        ),
        (
            "RS512",
            with(br#"{"alg":"RS512"}"#, &good),
            Some(&["RS512"]),
        ),
        (
            "expired an hour ago",
            rsa.token(now - 7200, now - 3600, PROJECT),
            Some(&["expired", "clock"]),
        ),
        (
            "issued an hour in the future",
            rsa.token(now + 3600, now + 7200, PROJECT),
            Some(&["in the future", "clock"]),
        ),
        (
            "a 48-hour lifetime",
            rsa.token(now - 60, now + 48 * 3600, PROJECT),
            Some(&["24 h"]),
        ),
        (
            "exp before iat",
            rsa.token(now, now - 30, PROJECT),
            Some(&["exp"]),
        ),
        (
            "for another project",
            rsa.token(now - 60, now + 3600, "someone-else"),
            Some(&["someone-else", PROJECT]),
        ),
        (
            "aud as a list",
            with(
                rs256,
                json!({"iat": now, "exp": now + 60, "aud": [PROJECT]})
                    .to_string()
                    .as_bytes(),
            ),
            Some(&["a list"]),
        ),
        (
            "no exp",
            with(
                rs256,
                json!({"iat": now, "aud": PROJECT}).to_string().as_bytes(),
            ),
            Some(&["`exp`", "missing"]),
        ),
        (
            "exp as a date string",
            with(
                rs256,
                json!({"iat": now, "exp": "2030-01-01", "aud": PROJECT})
                    .to_string()
                    .as_bytes(),
            ),
            Some(&["`exp`", "Unix seconds"]),
        ),
        (
            "exp twice",
            with(
                rs256,
                format!(
                    r#"{{"iat":{now},"exp":{},"aud":"{PROJECT}","exp":{}}}"#,
                    now - 7200,
                    now + 60
                )
                .as_bytes(),
            ),
            Some(&["well-formed JWT"]),
        ),
        (
            "a lone surrogate in an extra claim",
            with(
                rs256,
                format!(
                    r#"{{"iat":{now},"exp":{},"aud":"{PROJECT}","x":"\ud800"}}"#,
                    now + 60
                )
                .as_bytes(),
            ),
            Some(&["well-formed JWT"]),
        ),
        (
            "claims that are an array",
            with(rs256, b"[1,2,3]"),
            Some(&["well-formed JWT"]),
        ),
        (
            "signed by another RSA key",
            Signer::rsa("rsa2_private").fresh(),
            Some(&["signature"]),
        ),
        (
            "ES256 for a device with only an RSA key",
            Signer::ec("ec_private_pkcs8").fresh(),
            Some(&["ES256", "RSA"]),
        ),
        (
            "one bit of the signature flipped",
            format!("{input}.{}", b64(&flipped)),
            Some(&["signature"]),
        ),
        (
            "claims widened after signing",
            widened,
            Some(&["signature"]),
        ),
        (
            "alg switched to ES256 over an RSA signature",
            format!(
                "{}.{}",
                input.replacen(header_part, &b64(br#"{"alg":"ES256","typ":"JWT"}"#), 1),
                signature
            ),
            Some(&["signature"]),
        ),
        (
            "base64 padding",
            format!(
                "{input}.{}",
                STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).unwrap())
            ),
            Some(&["padding"]),
        ),
        (
            "four segments",
            format!("{fresh}.AAAA"),
            Some(&["well-formed JWT"]),
        ),
        ("two segments", input.to_owned(), Some(&["well-formed JWT"])),
        (
            "a 4 KB alg",
            with(
                json!({"alg": "X".repeat(4000)}).to_string().as_bytes(),
                &good,
            ),
            Some(&["RS256 and ES256"]),
        ),
        (
            "a 20 KB token",
            with(
                json!({"alg": "RS256", "pad": "x".repeat(20_000)})
                    .to_string()
                    .as_bytes(),
                &good,
            ),
            Some(&["well-formed JWT"]),
        ),
        (
            "kid and jku naming an attacker's key (ignored: accepted)",
            with(
                json!({"alg": "RS256", "kid": "attacker", "jku": "https://evil.example/keys"})
                    .to_string()
                    .as_bytes(),
                &good,
            ),
            None,
        ),
    ]
}

/// Over HTTP: `401` with the words, or `200` for an acceptable token.
async fn over_http(target: &Target, token: &str, words: Option<&[&str]>) -> Result<(), String> {
    let answer = target
        .publish(DEVICE, token, json!({"binaryData": "aGk="}))
        .await;
    match words {
        Some(words) => refused(&answer, 401, words),
        None if answer.0 == 200 => Ok(()),
        None => Err(format!("expected 200, got {} {}", answer.0, answer.1)),
    }
}

/// As an MQTT password: CONNACK 4, or 0 for an acceptable token.
async fn over_mqtt(target: &Target, token: &str, accepted: bool) -> Result<(), String> {
    let (mut raw, code) = Raw::connect(target.mqtt_addr, &client_id(REG, DEVICE), token, 60).await;
    raw.send(&rumqttc::mqttbytes::v4::Packet::Disconnect).await;
    let expected = if accepted {
        ConnectReturnCode::Success
    } else {
        ConnectReturnCode::BadUserNamePassword
    };
    (code == expected)
        .then_some(())
        .ok_or(format!("expected CONNACK {expected:?}, got {code:?}"))
}

pub async fn run(mut suite: Suite) -> usize {
    let signer = Signer::rsa("rsa_private");
    for (name, token, words) in cases(&signer) {
        let outcome = over_http(&suite.target, &token, words).await;
        if words.is_none() {
            suite.add_events(1);
        }
        suite.case(&format!("HTTP: {name}"), outcome).await;
        let outcome = over_mqtt(&suite.target, &token, words.is_none()).await;
        suite.case(&format!("MQTT: {name}"), outcome).await;
    }

    let t = &suite.target;
    let url = t.device_url(&format!("{}:publishEvent", Target::device_path(DEVICE)));
    let body = json!({"binaryData": "aGk="});
    let answer = t.send(t.client().post(&url).json(&body)).await;
    let outcome = refused(&answer, 401, &["Authorization", "Bearer"]);
    suite.case("HTTP: no Authorization header", outcome).await;

    let t = &suite.target;
    let basic = t
        .client()
        .post(&url)
        .header(AUTHORIZATION, "Basic dXNlcjpwYXNz");
    let answer = t.send(basic.json(&body)).await;
    let outcome = refused(&answer, 401, &["Bearer"]);
    suite.case("HTTP: Basic credentials", outcome).await;

    let t = &suite.target;
    let empty = t.client().post(&url).header(AUTHORIZATION, "Bearer ");
    let answer = t.send(empty.json(&body)).await;
    let outcome = refused(&answer, 401, &["UNAUTHENTICATED"]);
    suite.case("HTTP: an empty bearer token", outcome).await;

    suite.finish()
}
