//! A plugin's `http` grants and `http-limits`: each URL taken apart and each method checked
//! here, where its place in the file is known, so the host only compares requests with them.

use super::Checker;
use crate::diagnostic::{Diagnostic, suggest};
use crate::document::{HttpDoc, HttpLimitsDoc, Located};
use crate::types::{HttpDecl, HttpLimitsDecl};

/// The methods a grant may name.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const EXAMPLE: &str = "e.g. `url: \"https://api.example.com/v1/*\"`";

impl Checker<'_> {
    /// One entry of a plugin's `http` list.
    pub(super) fn http_grant(&self, doc: &Located<HttpDoc>) -> Result<HttpDecl, Diagnostic> {
        let url = &doc.value.url;
        let bad = |message: String, hint: &str| Err(self.error(url.at, message, hint));
        let text = url.value.trim();
        let (plain, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (true, rest)
        } else {
            return bad(
                format!("`{text}` does not start with `https://` (or `http://`)"),
                "write the scheme: `https://` for TLS, `http://` only where plain HTTP is meant",
            );
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path.contains(['?', '#']) || authority.contains(['?', '#', '@']) {
            return bad(
                format!("`{text}` has a query, a fragment or a user name"),
                "grant a host and a path only; `*` in the path matches the rest",
            );
        }
        let (host, port) = split_port(authority).map_err(|why| self.error(url.at, why, EXAMPLE))?;
        let host = host.to_ascii_lowercase();
        let wildcard = host.strip_prefix("*.").unwrap_or(&host);
        let valid_host = !wildcard.is_empty()
            && (wildcard.starts_with('[') && wildcard.ends_with(']')
                || wildcard
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !valid_host {
            return bad(
                format!("`{host}` is not a host name or address"),
                "a `*` may only start a host, as in `*.example.com`; write a name or an IP address",
            );
        }
        let mut methods = Vec::new();
        for method in &doc.value.methods {
            let name = method.value.to_ascii_uppercase();
            if !METHODS.contains(&name.as_str()) {
                let hint = suggest(
                    &name,
                    METHODS.iter().copied(),
                    "the methods a grant may name",
                );
                return Err(self.error(
                    method.at,
                    format!("`{}` is not an HTTP method", method.value),
                    hint,
                ));
            }
            if methods.contains(&name) {
                return Err(self.error(
                    method.at,
                    format!("{name} is listed twice"),
                    "list each method once",
                ));
            }
            methods.push(name);
        }
        if methods.is_empty() {
            return Err(self.error(
                doc.at,
                format!("the grant for `{text}` allows no method"),
                "list them, e.g. `methods: [GET, POST]`",
            ));
        }
        Ok(HttpDecl {
            url: text.to_string(),
            plain,
            host,
            port,
            path: if path.is_empty() {
                "/*".into()
            } else {
                path.into()
            },
            methods,
            at: doc.at,
        })
    }

    /// A plugin's `http-limits`.
    pub(super) fn http_limits(
        &self,
        doc: &Located<HttpLimitsDoc>,
    ) -> Result<HttpLimitsDecl, Diagnostic> {
        let limits = &doc.value;
        let period = |p: &Option<Located<crate::units::Period>>, key: &str| match p {
            Some(p) if p.value.0.is_zero() => Err(self.error(
                p.at,
                format!("`{key}` must be longer than 0"),
                format!("e.g. `{key}: 5s`, or leave it out for the default"),
            )),
            Some(p) => Ok(Some(p.value.0)),
            None => Ok(None),
        };
        let max_requests = match &limits.max_requests {
            Some(n) if n.value == 0 => {
                return Err(self.error(
                    n.at,
                    "`max-requests` must be at least 1",
                    "leave it out for the default of 100",
                ));
            }
            n => n.as_ref().map(|n| n.value),
        };
        Ok(HttpLimitsDecl {
            connect_timeout: period(&limits.connect_timeout, "connect-timeout")?,
            timeout: period(&limits.timeout, "timeout")?,
            max_response_bytes: limits.max_response.as_ref().map(|s| s.value.0),
            max_requests,
        })
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `host[:port]` (`[v6]:port` for IPv6) into its parts.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("`{p}` is not a port number (1 to 65535)")),
        },
    };
    if host.is_empty() {
        return Err(format!("`{authority}` names no host"));
    }
    Ok((host, port))
}
