//! Authentication: the challenge, Basic credentials, Bearer tokens.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use super::Remote;
use super::client::{read_limited, status_error};
use crate::auth::Challenge;
use crate::{Error, Result};

/// What a repository is opened for. Decided once, when it is opened: it
/// fixes the scopes every token is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read: `repository:R:pull`.
    Pull,
    /// Write: `repository:R:pull,push`, plus `repository:F:pull` for each
    /// repository F of the same registry that blobs may be mounted from.
    Push {
        /// Repositories to mount from.
        mount_from: Vec<String>,
    },
}

impl Access {
    /// The token scopes, own repository first.
    pub(crate) fn scopes(&self, repository: &str) -> Vec<String> {
        match self {
            Self::Pull => vec![format!("repository:{repository}:pull")],
            Self::Push { mount_from } => {
                let mut scopes = vec![format!("repository:{repository}:pull,push")];
                for from in mount_from.iter().filter(|f| *f != repository) {
                    let scope = format!("repository:{from}:pull");
                    if !scopes.contains(&scope) {
                        scopes.push(scope);
                    }
                }
                scopes
            }
        }
    }
}

#[derive(Debug)]
pub(super) enum AuthState {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        token: Option<String>,
    },
}

impl Remote {
    pub(super) fn take_challenge(&self, response: &Response) -> Result<()> {
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let mut state = self.0.auth.lock().expect("auth lock poisoned");
        *state = match challenge {
            Some(Challenge::Basic) => AuthState::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => AuthState::Bearer {
                realm,
                service,
                token: None,
            },
            None => return Err(self.unauthorized("the registry asks for authentication in a way strata does not speak (no Basic or Bearer challenge)")),
        };
        Ok(())
    }

    pub(super) fn unauthorized(&self, detail: &str) -> Error {
        Error::Unauthorized {
            registry: self.0.reference.registry.clone(),
            repository: self.0.reference.repository.clone(),
            detail: detail.to_owned(),
        }
    }

    fn wrong_credentials(&self) -> Error {
        match &self.0.creds {
            Some(c) => self.unauthorized(&format!(
                "401 Unauthorized for user {:?} (credentials from {}); check the username and password",
                c.username, c.origin
            )),
            None => self.unauthorized(
                "401 Unauthorized and no credentials were found; pass --creds USER:PASSWORD or log in with `docker login` / `skopeo login`",
            ),
        }
    }

    /// A refusal the registry explained (401 after a fresh token, 403):
    /// its own message goes into the error, with what was being done.
    pub(super) fn refused(&self, doing: &str, response: Response) -> Error {
        let status = response.status();
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(response, 4096), &mut body);
        let message = registry_message(&body).unwrap_or_else(|| body.trim().to_owned());
        let who = match &self.0.creds {
            Some(c) => format!("user {:?} (credentials from {})", c.username, c.origin),
            None => {
                "anonymous access (no credentials found; pass --creds or `skopeo login`)".into()
            }
        };
        self.unauthorized(&format!(
            "{status} while {doing} as {who}{}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ))
    }

    /// Fetches a token from the Bearer realm (Docker Hub's flow) for the
    /// scopes the repository was opened for.
    fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String> {
        let scopes = self.0.access.scopes(&self.0.reference.repository);
        let build = || {
            let mut req = self.0.http.get(realm);
            for scope in &scopes {
                req = req.query(&[("scope", scope.as_str())]);
            }
            if let Some(s) = service {
                req = req.query(&[("service", s)]);
            }
            if let Some(c) = &self.0.creds {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            req
        };
        let response = self.send_with_retries("GET", realm, build)?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(self.wrong_credentials());
            }
            _ => return Err(status_error("GET", realm, response)),
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_limited(response, 1 << 20, "token reply", realm)?;
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|e| Error::json(format!("the token reply of {realm}"), e))?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.unauthorized(&format!(
                    "the token server {realm} answered without a token"
                ))
            })
    }

    /// The Authorization header the registry wants, fetching a token first
    /// when there is none yet.
    pub(super) fn auth_header(&self) -> Result<Option<String>> {
        let mut state = self.0.auth.lock().expect("auth lock poisoned");
        match &mut *state {
            AuthState::Anonymous => Ok(None),
            AuthState::Basic => match &self.0.creds {
                Some(c) => Ok(Some(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{}:{}", c.username, c.password))
                ))),
                None => Err(self.wrong_credentials()),
            },
            AuthState::Bearer {
                realm,
                service,
                token,
            } => {
                if token.is_none() {
                    *token = Some(self.fetch_token(realm, service.as_deref())?);
                }
                Ok(token.as_ref().map(|t| format!("Bearer {t}")))
            }
        }
    }

    /// Sends an authorised request; on 401 takes the new challenge and
    /// fetches a fresh token once (tokens expire mid-pull).
    pub(super) fn send(
        &self,
        method: &'static str,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let mut refreshed = false;
        loop {
            let auth = self.auth_header()?;
            let response = self.send_with_retries(method, url, || match &auth {
                Some(value) => build().header(AUTHORIZATION, value),
                None => build(),
            })?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if refreshed {
                return Err(self.wrong_credentials());
            }
            refreshed = true;
            self.take_challenge(&response)?;
        }
    }
}

/// The first `message` of a distribution error body
/// (`{"errors":[{"code":"DENIED","message":"…"}]}`).
fn registry_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let errors: Errors = serde_json::from_str(body).ok()?;
    let first = errors.errors.into_iter().next()?;
    match (first.code, first.message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_scopes_name_the_repository_and_each_mount_source_once() {
        let access = Access::Push {
            mount_from: vec![
                "library/debian".into(),
                "team/app".into(),
                "library/debian".into(),
            ],
        };
        assert_eq!(
            access.scopes("team/app"),
            [
                "repository:team/app:pull,push",
                "repository:library/debian:pull"
            ]
        );
        assert_eq!(Access::Pull.scopes("a/b"), ["repository:a/b:pull"]);
    }

    #[test]
    fn the_registry_message_is_taken_from_its_error_body() {
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        assert_eq!(
            registry_message(body).as_deref(),
            Some("DENIED: requested access to the resource is denied")
        );
        assert_eq!(registry_message("not json"), None);
    }
}
