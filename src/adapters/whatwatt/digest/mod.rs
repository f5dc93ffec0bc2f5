//! HTTP authentication for the whatwatt Go, as pure functions: parsing `WWW-Authenticate`
//! challenges, choosing Digest or Basic, nonce counting and `stale=true`. No IO: [`AuthState`]
//! decides which header the next request carries and what a `401` means; the HTTP code in
//! `client.rs` only moves bytes.
//!
//! The Digest arithmetic and the `Authorization` header itself come from the `digest_auth` crate
//! (RFC 2069/2617/7616: `MD5`, `MD5-sess`, `SHA-256`, `SHA-512-256`, `qop=auth`/`auth-int`); the
//! tests below pin it to the RFC 2617 §3.5 example and to MD5-sess vectors computed with an
//! independent implementation (Python `hashlib`), and the simulator's verifier (which uses the
//! crate's server-side `AuthorizationHeader::digest`) is cross-checked against curl in the
//! integration tests.
//!
//! The challenge *parsing* stays here, because the crate's `WwwAuthenticateHeader::parse` reads
//! one challenge per header (`Digest …, Basic realm="x"` comes out as one garbled Digest), matches
//! `algorithm` and `qop` case-sensitively, and slices the header by character index as if it were
//! a byte index, so a non-ASCII byte in a gateway's header shifts every later name or panics
//! (`the_crates_own_parser_is_not_used_on_gateway_headers` shows it). Our parser splits the
//! challenges and fills the crate's [`WwwAuthenticateHeader`] fields directly.
//!
//! The gateway's user name is empty and its password is the Web UI password (0..31 characters).
//! Passwords and computed headers are never logged; [`AuthState`] prints without them.

use base64::Engine as _;
use digest_auth::{AlgorithmType, AuthContext, Charset, HttpMethod, WwwAuthenticateHeader};

pub(crate) use digest_auth::{Algorithm, Qop};

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Challenge {
    /// `Basic realm="..."`.
    Basic {
        /// Protection space, shown to users only.
        realm: String,
    },
    /// `Digest realm=..., nonce=..., ...`.
    Digest(DigestChallenge),
    /// Any other scheme (kept so callers can name it in errors).
    Other(String),
}

/// The parameters of a Digest challenge the client needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DigestChallenge {
    /// Protection space; the gateway's host name (`whatwatt-<id>`).
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Returned unchanged when present.
    pub opaque: Option<String>,
    /// `MD5` when absent.
    pub algorithm: Algorithm,
    /// The qop the client picks from the offered list (`auth` preferred); `None` is RFC 2069 mode.
    pub qop: Option<Qop>,
    /// `stale=true`: the password was right but the nonce expired; retry with the new nonce.
    pub stale: bool,
}

/// The algorithm tokens the crate knows, matched case-insensitively (RFC 7616 §3.3).
fn algorithm_from_token(token: &str) -> Option<Algorithm> {
    const NAMES: [(&str, AlgorithmType, bool); 6] = [
        ("MD5", AlgorithmType::MD5, false),
        ("MD5-sess", AlgorithmType::MD5, true),
        ("SHA-256", AlgorithmType::SHA2_256, false),
        ("SHA-256-sess", AlgorithmType::SHA2_256, true),
        ("SHA-512-256", AlgorithmType::SHA2_512_256, false),
        ("SHA-512-256-sess", AlgorithmType::SHA2_512_256, true),
    ];
    NAMES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(token)).map(|&(_, algo, sess)| Algorithm::new(algo, sess))
}

/// Splits a header value into `(scheme, params)` challenges. Handles several challenges in one
/// header (`Digest ..., Basic realm="x"`), quoted strings with `\` escapes and unquoted tokens
/// (`qop=auth`, as the fw 2.8.2 capture shows).
pub(crate) fn parse_challenges(header: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws_commas = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token_end = |mut i: usize| {
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b',' | b'=') {
            i += 1;
        }
        i
    };
    loop {
        skip_ws_commas(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        let end = token_end(i);
        if end == start {
            // A stray `=`: skip it rather than loop forever.
            i += 1;
            continue;
        }
        let token = &header[start..end];
        let mut j = end;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // `key=value` of the current challenge.
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let mut value = String::new();
            if j < b.len() && b[j] == b'"' {
                j += 1;
                let mut chars = header[j..].char_indices();
                let mut consumed = header.len() - j;
                while let Some((k, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            consumed = k + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                j += consumed;
            } else {
                let v_end = {
                    let mut k = j;
                    while k < b.len() && b[k] != b',' {
                        k += 1;
                    }
                    k
                };
                value.push_str(header[j..v_end].trim());
                j = v_end;
            }
            if let Some(last) = out.last_mut() {
                last.1.push((token.to_ascii_lowercase(), value));
            }
            i = j;
        } else if j < b.len() && b[j] == b'=' {
            // token68 before any scheme: malformed; skip it.
            i = j + 1;
        } else {
            out.push((token.to_owned(), Vec::new()));
            i = end;
        }
    }
    out
}

/// Parses every challenge of a `WWW-Authenticate` header.
pub(crate) fn challenges(header: &str) -> Vec<Challenge> {
    parse_challenges(header)
        .into_iter()
        .map(|(scheme, params)| {
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if scheme.eq_ignore_ascii_case("basic") {
                Challenge::Basic { realm: get("realm").unwrap_or_default() }
            } else if scheme.eq_ignore_ascii_case("digest") {
                let algorithm = match get("algorithm") {
                    Some(a) => algorithm_from_token(&a),
                    None => Some(Algorithm::default()),
                };
                let qop = get("qop").and_then(|list| {
                    let offered: Vec<&str> = list.split(',').map(str::trim).collect();
                    if offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
                        Some(Qop::AUTH)
                    } else if offered.iter().any(|q| q.eq_ignore_ascii_case("auth-int")) {
                        Some(Qop::AUTH_INT)
                    } else {
                        None
                    }
                });
                match (algorithm, get("nonce")) {
                    (Some(algorithm), Some(nonce)) => Challenge::Digest(DigestChallenge {
                        realm: get("realm").unwrap_or_default(),
                        nonce,
                        opaque: get("opaque"),
                        algorithm,
                        qop,
                        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
                    }),
                    _ => {
                        Challenge::Other(format!("Digest ({})", get("algorithm").unwrap_or_else(|| "no nonce".into())))
                    }
                }
            } else {
                Challenge::Other(scheme)
            }
        })
        .collect()
}

/// A Digest session: one server nonce, our cnonce, and the request counter.
#[derive(Clone)]
pub(crate) struct DigestSession {
    /// Client nonce, fixed for this server nonce (MD5-sess binds HA1 to it).
    pub cnonce: String,
    /// The challenge the nonce came from, in the crate's form; its `nc` is the number of requests
    /// sent with this nonce.
    prompt: WwwAuthenticateHeader,
}

impl DigestSession {
    /// A session for a fresh challenge: new cnonce, `nc` restarts at `00000001`.
    pub(crate) fn new(challenge: DigestChallenge, cnonce: String) -> DigestSession {
        let prompt = WwwAuthenticateHeader {
            domain: None,
            realm: challenge.realm,
            nonce: challenge.nonce,
            opaque: challenge.opaque,
            stale: false,
            algorithm: challenge.algorithm,
            // Only the qop we chose: the crate would otherwise prefer `auth-int` over `auth`.
            qop: challenge.qop.map(|q| vec![q]),
            userhash: false,
            charset: Charset::ASCII,
            nc: 0,
        };
        DigestSession { cnonce, prompt }
    }

    /// The `Authorization` value for the next request (counts it).
    /// `None` only if the crate refused the challenge, which our single chosen qop rules out.
    pub(crate) fn authorization(&mut self, username: &str, password: &str, method: &str, uri: &str) -> Option<String> {
        // An empty body: our requests are GETs, and `auth-int` then hashes the empty body (without
        // a body the crate would silently answer `auth-int` challenges with `qop=auth`).
        let mut context =
            AuthContext::new_with_method(username, password, uri, Some(&[][..]), HttpMethod(method.into()));
        context.set_custom_cnonce(self.cnonce.as_str());
        // Wrap rather than overflow: the crate adds 1 unchecked, and a gateway nonce never lives
        // for 2^32 requests anyway.
        if self.prompt.nc == u32::MAX {
            self.prompt.nc = 0;
        }
        self.prompt.respond(&context).ok().map(|header| header.to_string())
    }
}

/// Standard base64 (RFC 4648 §4) with padding, for Basic credentials.
pub(crate) fn base64(input: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// `Basic base64(user:password)`.
pub(crate) fn basic_authorization(username: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{username}:{password}").as_bytes()))
}

/// Which credentials the client currently sends.
#[derive(Clone, Default)]
pub(crate) enum Scheme {
    /// Nothing yet: the first request probes unauthenticated (the gateway's default is no auth).
    #[default]
    None,
    /// Firmware < 1.10: Basic.
    Basic,
    /// Firmware ≥ 1.10: Digest with the current session.
    Digest(Box<DigestSession>),
}

/// What to do after a `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthAction {
    /// Send the same request again with the new credentials.
    Retry,
    /// Give up with this explanation (no secret in it).
    Fail(AuthFailure),
}

/// Why authentication cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthFailure {
    /// The gateway wants a password and the config has none.
    #[error("the gateway's web UI is protected ({scheme}); set `password` or `password_file`")]
    PasswordNeeded {
        /// Basic or Digest.
        scheme: &'static str,
    },
    /// Credentials were sent and refused.
    #[error("the gateway refused the password ({scheme}); check `password` / `password_file`")]
    Refused {
        /// Basic or Digest.
        scheme: &'static str,
    },
    /// The `401` carried no challenge we can answer.
    #[error("the gateway asked for an unsupported authentication: {0}")]
    Unsupported(String),
}

/// The per-gateway authentication state (shared by REST and SSE requests).
#[derive(Clone, Default)]
pub(crate) struct AuthState {
    /// The scheme in use.
    pub scheme: Scheme,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match &self.scheme {
            Scheme::None => "none",
            Scheme::Basic => "basic",
            Scheme::Digest(_) => "digest",
        };
        write!(f, "AuthState({s})")
    }
}

impl AuthState {
    /// `none`, `basic` or `digest`, for `/readyz`.
    pub(crate) fn name(&self) -> &'static str {
        match &self.scheme {
            Scheme::None => "none",
            Scheme::Basic => "basic",
            Scheme::Digest(d) => match (d.prompt.algorithm.algo, d.prompt.algorithm.sess) {
                (AlgorithmType::MD5, false) => "digest (MD5)",
                (AlgorithmType::MD5, true) => "digest (MD5-sess)",
                (AlgorithmType::SHA2_256, false) => "digest (SHA-256)",
                (AlgorithmType::SHA2_256, true) => "digest (SHA-256-sess)",
                (AlgorithmType::SHA2_512_256, false) => "digest (SHA-512-256)",
                (AlgorithmType::SHA2_512_256, true) => "digest (SHA-512-256-sess)",
            },
        }
    }

    /// The `Authorization` value for the next request, if any (Digest counts `nc` up).
    pub(crate) fn authorization(
        &mut self,
        username: &str,
        password: Option<&str>,
        method: &str,
        uri: &str,
    ) -> Option<String> {
        let password = password?;
        match &mut self.scheme {
            Scheme::None => None,
            Scheme::Basic => Some(basic_authorization(username, password)),
            Scheme::Digest(s) => s.authorization(username, password, method, uri),
        }
    }

    /// Handles a `401` whose `WWW-Authenticate` headers are `headers`. `sent` says whether the
    /// refused request carried credentials; `cnonce` is a fresh client nonce for a new session.
    pub(crate) fn unauthorized<'a>(
        &mut self,
        headers: impl IntoIterator<Item = &'a str>,
        sent: bool,
        have_password: bool,
        cnonce: impl FnOnce() -> String,
    ) -> AuthAction {
        let all: Vec<Challenge> = headers.into_iter().flat_map(challenges).collect();
        // Digest first: the docs' robust clients default to it, and it keeps the password off the wire.
        if let Some(d) = all.iter().find_map(|c| match c {
            Challenge::Digest(d) => Some(d.clone()),
            _ => None,
        }) {
            if !have_password {
                return AuthAction::Fail(AuthFailure::PasswordNeeded { scheme: "Digest" });
            }
            let was_digest = matches!(self.scheme, Scheme::Digest(_));
            if sent && was_digest && !d.stale {
                return AuthAction::Fail(AuthFailure::Refused { scheme: "Digest" });
            }
            // Unsent, a scheme switch, or stale=true: a new session with nc=00000001.
            self.scheme = Scheme::Digest(Box::new(DigestSession::new(d, cnonce())));
            return AuthAction::Retry;
        }
        if all.iter().any(|c| matches!(c, Challenge::Basic { .. })) {
            if !have_password {
                return AuthAction::Fail(AuthFailure::PasswordNeeded { scheme: "Basic" });
            }
            if sent && matches!(self.scheme, Scheme::Basic) {
                return AuthAction::Fail(AuthFailure::Refused { scheme: "Basic" });
            }
            self.scheme = Scheme::Basic;
            return AuthAction::Retry;
        }
        let names: Vec<String> = all
            .iter()
            .map(|c| match c {
                Challenge::Other(s) => s.clone(),
                _ => String::new(),
            })
            .collect();
        let shown = if names.is_empty() { "no WWW-Authenticate challenge".to_owned() } else { names.join(", ") };
        AuthAction::Fail(AuthFailure::Unsupported(shown))
    }
}

/// A random 16-hex-digit client nonce.
pub(crate) fn new_cnonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests;
