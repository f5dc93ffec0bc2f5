//! Unit tests of the whatwatt HTTP authentication: RFC 2617 vectors and an independent MD5-sess
//! check, challenge parsing (captured, several per header, garbage), `nc` counting, wrong password
//! versus stale nonce, Basic for old firmware, base64, and debug output without secrets.

use super::*;

const MD5: Algorithm = Algorithm { algo: AlgorithmType::MD5, sess: false };
const MD5_SESS: Algorithm = Algorithm { algo: AlgorithmType::MD5, sess: true };

/// The `response` our session sends for request number `nc` of a nonce.
#[allow(clippy::too_many_arguments)] // the RFC's own parameter list
fn response(
    algorithm: Algorithm,
    qop: Option<Qop>,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
    uri: &str,
) -> String {
    let challenge =
        DigestChallenge { realm: realm.into(), nonce: nonce.into(), opaque: None, algorithm, qop, stale: false };
    let mut session = DigestSession::new(challenge, cnonce.into());
    session.prompt.nc = nc - 1;
    let header = session.authorization(username, password, "GET", uri).expect("a header");
    let (_, rest) = header.split_once("response=\"").expect("a response");
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

#[test]
fn the_rfc_2617_example_gives_the_published_response() {
    // RFC 2617 §3.5.
    let r = response(
        MD5,
        Some(Qop::AUTH),
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        1,
        "0a4f113b",
        "/dir/index.html",
    );
    assert_eq!(r, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn md5_sess_matches_an_independent_implementation() {
    // Expected values computed with Python's hashlib from the RFC 2617 formulas.
    let r = response(
        MD5_SESS,
        Some(Qop::AUTH),
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        1,
        "0a4f113b",
        "/dir/index.html",
    );
    assert_eq!(r, "8e3825c57e897f5a0dec6c2d4e5059d0");
    let r = response(
        MD5_SESS,
        Some(Qop::AUTH),
        "",
        "whatwatt-ECC9FF5C7F14",
        "s3cret",
        "5d41402abc4b2a76b9719d911017c592",
        2,
        "deadbeefcafebabe",
        "/api/v1/live",
    );
    assert_eq!(r, "fefd3c2c77f28e0579a4f2804e06841a");
}

#[test]
fn auth_int_hashes_the_empty_body() {
    let r = response(
        MD5_SESS,
        Some(Qop::AUTH_INT),
        "",
        "whatwatt-ECC9FF5C7F14",
        "s3cret",
        "5d41402abc4b2a76b9719d911017c592",
        1,
        "deadbeefcafebabe",
        "/api/v1/report",
    );
    assert_eq!(r, "958a113f0d8440d65493e99913feee80");
}

#[test]
fn an_auth_int_only_challenge_is_answered_with_auth_int() {
    let mut s = AuthState::default();
    let hdr = r#"Digest realm="r", nonce="n1", qop="auth-int", algorithm=MD5-sess"#;
    assert_eq!(s.unauthorized([hdr], false, true, || "c1".into()), AuthAction::Retry);
    let a = s.authorization("", Some("pw"), "GET", "/api/v1/report").unwrap();
    assert!(a.contains("qop=auth-int"), "{a}");
}

#[test]
fn sha_256_challenges_are_answered_too() {
    // RFC 7616 §3.9.1 (SHA-256, user Mufasa, password "Circle of Life").
    let r = response(
        Algorithm::new(AlgorithmType::SHA2_256, false),
        Some(Qop::AUTH),
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        1,
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        "/dir/index.html",
    );
    assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    let c = challenges(r#"Digest realm="r", nonce="n", algorithm=sha-256, qop=auth"#);
    let Challenge::Digest(d) = &c[0] else { panic!("{c:?}") };
    assert_eq!(d.algorithm, Algorithm::new(AlgorithmType::SHA2_256, false));
}

#[test]
fn the_crates_own_parser_is_not_used_on_gateway_headers() {
    // Why `challenges` exists. The crate reads one challenge per header: with Basic first it
    // finds no realm. It matches the algorithm case-sensitively. And it slices by character
    // index as if it were a byte index: non-ASCII before a parameter panics.
    let two = r#"Basic realm="b", Digest realm="a", nonce="n", qop=auth"#;
    assert!(digest_auth::parse(two).is_err());
    assert!(digest_auth::parse(r#"Digest realm="a", nonce="n", algorithm=md5-sess"#).is_err());
    let non_ascii = r#"Digest opaque="€€€€"nonce="n", realm="a""#;
    assert!(std::panic::catch_unwind(|| digest_auth::parse(non_ascii)).is_err(), "the crate panics");
    let ours = challenges(two);
    assert_eq!(ours[0], Challenge::Basic { realm: "b".into() });
    assert!(matches!(&ours[1], Challenge::Digest(d) if d.realm == "a" && d.qop == Some(Qop::AUTH)), "{ours:?}");
    assert!(matches!(&challenges(non_ascii)[0], Challenge::Digest(d) if d.opaque.as_deref() == Some("€€€€")));
}

#[test]
fn the_field_captured_challenge_parses_with_unquoted_tokens() {
    let c =
        challenges(r#"Digest realm="whatwatt-ECC9FF5C7F14", algorithm=MD5-sess, qop=auth, nonce="abc", opaque="xyz""#);
    let Challenge::Digest(d) = &c[0] else { panic!("{c:?}") };
    assert_eq!(d.realm, "whatwatt-ECC9FF5C7F14");
    assert_eq!(d.algorithm, MD5_SESS);
    assert_eq!(d.qop, Some(Qop::AUTH));
    assert_eq!(d.nonce, "abc");
    assert_eq!(d.opaque.as_deref(), Some("xyz"));
    assert!(!d.stale);
}

#[test]
fn several_challenges_in_one_header_are_all_found() {
    let c = challenges(r#"Digest realm="a, b", nonce="n\"1", qop="auth,auth-int", stale=TRUE, Basic realm="x""#);
    assert_eq!(c.len(), 2, "{c:?}");
    let Challenge::Digest(d) = &c[0] else { panic!("{c:?}") };
    assert_eq!(d.realm, "a, b");
    assert_eq!(d.nonce, "n\"1");
    assert!(d.stale);
    assert_eq!(d.algorithm, MD5);
    assert_eq!(c[1], Challenge::Basic { realm: "x".into() });
}

#[test]
fn garbage_headers_never_panic() {
    for h in
        ["", "=", "Digest", "Digest ,,,", "Digest realm=\"unterminated", "==a", "Basic realm", "Digest nonce=\"é\""]
    {
        let _ = challenges(h);
    }
    assert!(matches!(challenges("Digest realm=\"x\"")[0], Challenge::Other(_)), "no nonce, no Digest");
}

#[test]
fn nc_counts_up_per_nonce_and_restarts_with_a_new_one() {
    let mut s = AuthState::default();
    let hdr = r#"Digest realm="r", nonce="n1", qop="auth", algorithm=MD5-sess, opaque="o""#;
    assert_eq!(s.unauthorized([hdr], false, true, || "c1".into()), AuthAction::Retry);
    let a1 = s.authorization("", Some("pw"), "GET", "/api/v1/system").unwrap();
    let a2 = s.authorization("", Some("pw"), "GET", "/api/v1/system").unwrap();
    assert!(a1.contains("nc=00000001") && a1.contains("cnonce=\"c1\"") && a1.contains("opaque=\"o\""), "{a1}");
    assert!(a1.contains("username=\"\"") && a1.contains("algorithm=MD5-sess"), "{a1}");
    assert!(a2.contains("nc=00000002"), "{a2}");
    let stale = r#"Digest realm="r", nonce="n2", qop="auth", algorithm=MD5-sess, stale=true"#;
    assert_eq!(s.unauthorized([stale], true, true, || "c2".into()), AuthAction::Retry);
    let a3 = s.authorization("", Some("pw"), "GET", "/api/v1/system").unwrap();
    assert!(a3.contains("nonce=\"n2\"") && a3.contains("nc=00000001") && a3.contains("cnonce=\"c2\""), "{a3}");
    assert!(!a3.contains("pw"), "the password never appears in the header");
}

#[test]
fn a_refused_digest_without_stale_is_a_wrong_password() {
    let mut s = AuthState::default();
    let hdr = r#"Digest realm="r", nonce="n1", qop=auth"#;
    assert_eq!(s.unauthorized([hdr], false, true, || "c".into()), AuthAction::Retry);
    assert_eq!(
        s.unauthorized([hdr], true, true, || "c".into()),
        AuthAction::Fail(AuthFailure::Refused { scheme: "Digest" })
    );
}

#[test]
fn basic_is_used_for_old_firmware_and_needs_a_password() {
    let mut s = AuthState::default();
    assert_eq!(
        s.unauthorized(["Basic realm=\"whatwatt\""], false, false, || "c".into()),
        AuthAction::Fail(AuthFailure::PasswordNeeded { scheme: "Basic" })
    );
    assert_eq!(s.unauthorized(["Basic realm=\"whatwatt\""], false, true, || "c".into()), AuthAction::Retry);
    assert_eq!(s.authorization("", Some("s3cret"), "GET", "/").unwrap(), "Basic OnMzY3JldA==");
    assert_eq!(
        s.unauthorized(["Basic realm=\"whatwatt\""], true, true, || "c".into()),
        AuthAction::Fail(AuthFailure::Refused { scheme: "Basic" })
    );
}

#[test]
fn base64_follows_rfc_4648() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(i.as_bytes()), o);
    }
    assert_eq!(basic_authorization("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

#[test]
fn debug_output_shows_no_secret() {
    let mut s = AuthState::default();
    s.unauthorized([r#"Digest realm="r", nonce="n1", qop=auth"#], false, true, || "c".into());
    assert_eq!(format!("{s:?}"), "AuthState(digest)");
}
