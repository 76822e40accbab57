//! The admin API's HTTP client (hyper's HTTP/1.1 client connection over tokio): what the CLI
//! (`tandem status`, `tandem volume ...`, `tandem export ...`, `tandem host ...`) and a node
//! handing a volume to its peer (switchover) use. One request per connection; bodies are
//! JSON; a status other than 2xx is an [`Error::Status`] carrying the API's JSON error message.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take in all (a switchover waits for its peer's promotion).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (`/metrics` of a big node included).
const MAX_BODY: usize = 64 << 20;

/// An error of the admin API, as JSON a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

/// Why a request to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection, a broken one, or no answer in time.
    #[error("admin API at {addr}: {source}")]
    Io {
        /// The address tried.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// Not a well-formed HTTP answer, or a body of an unexpected shape.
    #[error("admin API at {addr}: {what}")]
    Protocol {
        /// The address tried.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
    /// The API answered with an error status.
    #[error("admin API at {addr} answered {status}: {message}")]
    Status {
        /// The address asked.
        addr: SocketAddr,
        /// The HTTP status code.
        status: u16,
        /// The API's message (the `error` of its JSON answer, or the body).
        message: String,
    },
}

/// One request to the admin API at `addr`.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: &'a str,
    /// The bearer token, for mutating requests.
    pub token: Option<&'a str>,
    /// A JSON body.
    pub body: Option<String>,
}

impl<'a> Call<'a> {
    /// A `GET` of `path`.
    pub fn get(path: &'a str) -> Call<'a> {
        Call {
            method: Method::GET,
            path,
            token: None,
            body: None,
        }
    }

    /// A mutating request (`method`) of `path` with `token` and an optional JSON body.
    pub fn send(
        method: Method,
        path: &'a str,
        token: Option<&'a str>,
        body: Option<String>,
    ) -> Call<'a> {
        Call {
            method,
            path,
            token,
            body,
        }
    }
}

/// The message of an error answer: the `error` field of the API's JSON, else the body.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorReply>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string())
}

/// Sends `call` to `addr`; returns the body of a 2xx answer.
pub async fn request(addr: SocketAddr, call: Call<'_>) -> Result<String, Error> {
    let io = |source| Error::Io { addr, source };
    let proto = |what: String| Error::Protocol { addr, what };
    let timed_out = || {
        io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())?
        .map_err(io)?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| proto(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(call.path)
            .header(hyper::header::HOST, addr.to_string());
        if let Some(t) = call.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if call.body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(
                call.body.clone().unwrap_or_default(),
            )))
            .map_err(|e| proto(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| proto(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| proto(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(Error::Status {
                addr,
                status: status.as_u16(),
                message: message(&body),
            });
        }
        String::from_utf8(body.to_vec()).map_err(|_| proto("the answer is not UTF-8".into()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| timed_out())?
}

/// [`request`] for callers without a runtime (the CLI, tests' threads): runs it on a thread
/// of its own with a one-thread runtime, so it works from any context.
pub fn blocking(addr: SocketAddr, call: Call<'_>) -> Result<String, Error> {
    let owned = (
        call.method,
        call.path.to_string(),
        call.token.map(str::to_string),
        call.body,
    );
    let worker = std::thread::spawn(move || {
        let (method, path, token, body) = owned;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io { addr, source })?;
        rt.block_on(request(
            addr,
            Call {
                method,
                path: &path,
                token: token.as_deref(),
                body,
            },
        ))
    });
    worker.join().unwrap_or_else(|_| {
        Err(Error::Protocol {
            addr,
            what: "the request's thread panicked".into(),
        })
    })
}
