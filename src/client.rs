//! A client for the daemon's Unix socket, used by `profilectl`, the tests
//! and the benchmarks.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Where `profilectl` looks for the daemon unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/profiled/api.sock";

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached.
    #[error("{}", connect_message(socket, source))]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to profiled failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// The answer was not the JSON expected.
    #[error("profiled answered something unexpected: {0}")]
    Decode(#[from] serde_json::Error),
    /// The daemon answered with an error.
    #[error("{detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The problem's stable code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
}

/// What to say when `socket` could not be reached: what the error means
/// and what to try, for the default socket (the packaged service) or one
/// the user named.
fn connect_message(socket: &Path, source: &std::io::Error) -> String {
    let at = socket.display();
    let what = match source.kind() {
        std::io::ErrorKind::NotFound => "no socket is there".to_owned(),
        std::io::ErrorKind::ConnectionRefused => "nothing listens on the socket".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (the socket or a directory above it is closed to you)".to_owned()
        }
        _ => source.to_string(),
    };
    if socket == Path::new(DEFAULT_SOCKET) {
        format!(
            "cannot reach profiled at {at}: {what}; is the service running? \
             (`systemctl status profiled`; started by hand, it serves the socket its \
             profiled.toml names: point profilectl at it with --socket or PROFILED_SOCKET)"
        )
    } else {
        format!(
            "cannot reach profiled at {at} (named by --socket or PROFILED_SOCKET): {what}; \
             is a daemon running with [paths] socket = \"{at}\" in its profiled.toml?"
        )
    }
}

impl Error {
    /// Whether the daemon could not be reached at all (as opposed to
    /// answering with a refusal): profilectl exits 3 for it.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Http(_))
    }
}

/// A raw answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

#[derive(Deserialize)]
struct Problem {
    code: Option<String>,
    detail: Option<String>,
}

impl Response {
    /// The body as `T` when the status is a success, else [`Error::Api`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.ok()?;
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// `Ok` for a success status, else the problem as [`Error::Api`].
    pub fn ok(&self) -> Result<(), Error> {
        if self.status.is_success() {
            return Ok(());
        }
        let problem: Problem = serde_json::from_slice(&self.body).unwrap_or(Problem {
            code: None,
            detail: None,
        });
        Err(Error::Api {
            status: self.status.as_u16(),
            code: problem.code.unwrap_or_else(|| "unknown".into()),
            detail: problem
                .detail
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned()),
        })
    }
}

/// A client for one socket, optionally acting on another account's profile.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    user: Option<String>,
}

impl Client {
    /// A client of the daemon at `socket`; with `user`, every request acts
    /// on that account's profile (admins only).
    pub fn new(socket: &Path, user: Option<String>) -> Client {
        Client {
            socket: socket.to_owned(),
            user,
        }
    }

    /// Sends one request and returns the raw answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, Error> {
        let mut sender = self.connect().await?;
        let uri = self.with_user(path);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "localhost");
        let bytes = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| Error::Request(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response { status, body })
    }

    /// Opens a server-sent-event stream at `path`, resuming after
    /// `last_event_id` when given; the body is read as it arrives.
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Result<hyper::body::Incoming, Error> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.with_user(path))
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Request(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let body = resp.into_body().collect().await?.to_bytes();
        Response { status, body }.ok()?;
        Err(Error::Request(format!("unexpected status {status}")))
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the answer is read; its error, if
            // any, surfaces through send_request or the body.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// `GET path` decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::GET, path, None).await?.json()
    }

    /// `method path` with a JSON body, decoded as `T`.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Error> {
        self.call(method, path, Some(body)).await?.json()
    }

    /// `GET /v1/search`: the `limit` best hits for `query`.
    pub async fn search(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<crate::search::query::Hits, Error> {
        self.get(&format!("/v1/search?q={}&limit={limit}", encode(query)))
            .await
    }

    fn with_user(&self, path: &str) -> String {
        match &self.user {
            None => path.to_owned(),
            Some(u) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}user={}", encode(u))
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
