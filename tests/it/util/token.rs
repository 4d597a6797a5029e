//! A token server as Docker Hub runs one: it checks Basic credentials (or
//! allows anonymous pulls), and answers `{"token": JWT}` signed with a key
//! whose certificate the registry trusts (`auth.token.rootcertbundle`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, DnType, KeyPair};

use super::http::{Request, Server, respond};

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";

pub struct TokenServer {
    _server: Server,
    pub realm: String,
    /// The registry's `rootcertbundle`.
    pub cert: PathBuf,
    /// Every request the token server received.
    pub requests: Arc<Mutex<Vec<Request>>>,
}

/// Starts a token server. `users` may pull and push; anonymous callers get a
/// pull token only when `anonymous_pull`.
pub fn start(dir: &Path, users: &[(&str, &str)], anonymous_pull: bool) -> TokenServer {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "strata test token signer");
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("token-signer.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    let x5c = STANDARD.encode(cert.der());
    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let users: Vec<String> = users
        .iter()
        .map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))))
        .collect();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let server = Server::start("127.0.0.1", move |req, stream| {
        log.lock().unwrap().push(req.clone());
        let authenticated = match req.header("authorization") {
            Some(auth) if users.iter().any(|u| u == auth) => true,
            Some(_) => {
                respond(
                    stream,
                    401,
                    &[],
                    br#"{"details":"incorrect username or password"}"#,
                );
                return;
            }
            None => false,
        };
        if !authenticated && !anonymous_pull {
            respond(
                stream,
                401,
                &[],
                br#"{"details":"authentication required"}"#,
            );
            return;
        }
        let access: Vec<serde_json::Value> = req
            .query_all("scope")
            .into_iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|a| authenticated || *a == "pull")
                    .collect();
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "test", "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", rand_suffix()),
            "access": access,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.x5c = Some(vec![x5c.clone()]);
        let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
        respond(
            stream,
            200,
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    });
    TokenServer {
        realm: format!("http://{}/token", server.addr),
        _server: server,
        cert: cert_path,
        requests,
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
