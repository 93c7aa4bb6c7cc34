//! The bearer token that writes (and, when asked, reads) need: made on the server's first
//! start, kept in a file next to the database that only its user can read, and checked on
//! every request before any handler runs.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// A bearer token: 32 random bytes as 64 hex digits. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Result<Self, std::io::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token's text, to give to whoever may write.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in time that does not depend on where they differ.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The file that keeps a database's token: `<database>.api-token`, mode 0600.
#[derive(Clone, Debug)]
pub struct TokenFile {
    /// Where it is.
    pub path: PathBuf,
    /// The token it holds.
    pub token: Token,
    /// True when this call created it (print the token once, then).
    pub created: bool,
}

impl TokenFile {
    /// The token file of the database at `db`: read if it exists, else created with a fresh
    /// token, readable and writable by this user only. A file that is readable by others or
    /// does not hold a token is refused, with what to do.
    pub fn for_database(db: &Path) -> Result<Self, std::io::Error> {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".api-token");
        Self::at(db.with_file_name(name))
    }

    /// The token file at `path`, read or created as [`TokenFile::for_database`] does: for a
    /// database that is not a file (PostgreSQL), whose front end picks the place.
    pub fn at(path: PathBuf) -> Result<Self, std::io::Error> {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                let text = text.trim();
                if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(std::io::Error::other(format!(
                        "{} does not hold an API token (64 hex digits); delete it and start the \
                         server again to make a new one",
                        path.display()
                    )));
                }
                Ok(TokenFile {
                    path,
                    token: Token(text.to_string()),
                    created: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = Token::generate()?;
                write_private(&path, token.as_str())?;
                Ok(TokenFile {
                    path,
                    token,
                    created: true,
                })
            }
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("cannot read the API token file {}: {e}", path.display()),
            )),
        }
    }
}

/// Creates `path` with `text`, readable and writable by this user only (never replacing a
/// file another process created meanwhile).
fn write_private(path: &Path, text: &str) -> Result<(), std::io::Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create the API token file {}: {e}", path.display()),
        )
    })?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()
}

/// Refuses a token file that others may read: the token would not be a secret.
fn check_private(path: &Path) -> Result<(), std::io::Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} can be read by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }
    Ok(())
}

/// Who may do what.
pub(crate) struct Auth {
    token: Token,
    reads_need_token: bool,
}

impl Auth {
    pub(crate) fn new(token: Token, reads_need_token: bool) -> Self {
        Auth {
            token,
            reads_need_token,
        }
    }

    /// Whether `request` needs the token: every write, and reads of `/api/` when configured.
    fn needs_token(&self, request: &Request) -> bool {
        let read = matches!(*request.method(), Method::GET | Method::HEAD);
        !read || (self.reads_need_token && request.uri().path().starts_with("/api/"))
    }

    /// The token the request carries: `Authorization: Bearer …`, or (for `EventSource`, which
    /// cannot set headers) a `token` query parameter on a read.
    fn given(request: &Request) -> Option<&str> {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        header.or_else(|| {
            if request.method() != Method::GET {
                return None;
            }
            request
                .uri()
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="))
        })
    }
}

/// The middleware: a request that needs the token and lacks it (or has another) is answered
/// 401 before any handler runs, so it changes nothing.
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let auth = &state.auth;
    if auth.needs_token(&request) && !Auth::given(&request).is_some_and(|t| auth.token.matches(t)) {
        let mut response = ApiError::unauthorized().into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}
