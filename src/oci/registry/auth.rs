//! Registry authentication: challenges, the bearer-token flow, basic auth, and response
//! helpers shared by the pull and push sides.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use super::RegistrySource;
use crate::oci::OciError;

/// Whether `host` (without port; IPv6 with or without brackets) is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => val.extend(chars.next()),
                    c => val.push(c),
                }
            }
        } else {
            val = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

impl RegistrySource {
    pub(super) fn scope(repo: &str, push: bool) -> String {
        format!(
            "repository:{repo}:{}",
            if push { "pull,push" } else { "pull" }
        )
    }

    /// Adds the credentials we hold for `scope` to a request.
    pub(super) fn authorize(&self, rb: RequestBuilder, scope: &str) -> RequestBuilder {
        let token = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned());
        match (token, &self.opts.credentials) {
            (Some(t), _) => rb.bearer_auth(t),
            (None, Some((u, p))) if self.basic.load(Ordering::Relaxed) => rb.basic_auth(u, Some(p)),
            _ => rb,
        }
    }

    pub(super) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request built by `make`, answering one authentication challenge.
    pub(super) async fn send(
        &self,
        repo: &str,
        push: bool,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, OciError> {
        let scope = Self::scope(repo, push);
        let resp = self
            .authorize(make(), &scope)
            .send()
            .await
            .map_err(self.failed(None))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let token = self
                    .fetch_token(
                        &realm,
                        service.as_deref(),
                        asked.as_deref().unwrap_or(&scope),
                    )
                    .await?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(scope.clone(), token);
                }
            }
            Some(Challenge::Basic)
                if self.opts.credentials.is_some() && !self.basic.swap(true, Ordering::Relaxed) => {
            }
            _ => {
                return Err(self.err(format!(
                    "authentication required for {repo} (401) and no usable credentials"
                )));
            }
        }
        let resp = self
            .authorize(make(), &scope)
            .send()
            .await
            .map_err(self.failed(None))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.err(format!("authentication for {repo} was refused (401)")));
        }
        Ok(resp)
    }

    /// Runs the token request of the bearer flow.
    pub(super) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, OciError> {
        let mut url =
            Url::parse(realm).map_err(self.failed(Some(format!("token realm {realm:?}"))))?;
        let realm_host = url.host_str().unwrap_or_default().to_string();
        match url.scheme() {
            "https" => {}
            "http" if self.opts.insecure || is_loopback(&realm_host) => {}
            _ => return Err(self.err(format!("token realm {realm} is not HTTPS; refused"))),
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut rb = self.client.get(url).timeout(self.opts.timeout);
        if let Some((u, p)) = &self.opts.credentials {
            rb = rb.basic_auth(u, Some(p));
        }
        let resp = rb
            .send()
            .await
            .map_err(self.failed(Some("token request".into())))?;
        let resp = self.check(resp, "token request").await?;
        let body = self.read_limited(resp, 1 << 20).await?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(self.failed(Some("token response".into())))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| self.err("token response has no token"))
    }

    /// Turns a non-success response into an error carrying the registry's message.
    pub(super) async fn check(&self, resp: Response, what: &str) -> Result<Response, OciError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = self.read_limited(resp, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        Err(self.err(format!("{what}: HTTP {status}: {}", text.trim())))
    }

    /// Reads a response body of at most `limit` bytes.
    pub(super) async fn read_limited(
        &self,
        mut resp: Response,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(OciError::Limit(format!(
                "{}: response larger than {limit} bytes",
                self.host
            )));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(self.failed(None))? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(OciError::Limit(format!(
                    "{}: response larger than {limit} bytes",
                    self.host
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
