//! The zero-copy answer path for asset downloads: which request heads qualify, turning one into
//! a router request, and writing the router's response as HTTP/1.1 — asset bodies with
//! `sendfile(2)` ([`DirectBody`]), any other body framed by `Content-Length` or chunked.

use std::io;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header,
};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tower::ServiceExt as _;

use crate::assets::DirectBody;
use crate::clock::{http_date, now_secs};
use crate::frontend::listen::TrackedIo;

/// Most headers a request we answer may have (more goes to hyper, which decides).
const MAX_HEADERS: usize = 64;

/// Largest request head we buffer before leaving the connection to hyper (which answers 431).
const MAX_HEAD: usize = 64 * 1024;

/// Paths answered here (asset downloads and registry blobs); everything else goes to hyper.
const PATH_PREFIXES: [&str; 2] = ["/image/", "/v2/"];

/// What the start of a connection's buffer holds.
#[derive(Debug)]
pub(super) enum Head {
    /// A complete request this path answers (its head already consumed from the buffer).
    Direct(Box<DirectRequest>),
    /// Anything else: the buffer is left as read, for hyper.
    Other,
}

/// A bodiless `GET`/`HEAD` request ready for the router.
#[derive(Debug)]
pub(super) struct DirectRequest {
    request: Request<Body>,
    close: bool,
}

/// Classifies the head at the start of `buf`: `None` while it is incomplete.
pub(super) fn classify(buf: &mut BytesMut) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return None,
        _ => return Some(Head::Other),
    };
    let Some(req) = qualify(&parsed) else {
        return Some(Head::Other);
    };
    let _ = buf.split_to(len);
    Some(Head::Direct(Box::new(req)))
}

/// The request, if it is an HTTP/1.1 `GET`/`HEAD` of an asset path without a body, an
/// expectation or an upgrade.
fn qualify(parsed: &httparse::Request<'_, '_>) -> Option<DirectRequest> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let path = parsed.path?;
    if !PATH_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    let mut close = false;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && h.value.trim_ascii() != b"0")
        {
            return None;
        }
        if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        }
        builder = builder.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let request = builder.body(Body::empty()).ok()?;
    Some(DirectRequest { request, close })
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes (HEAD, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Answers `req` through `router` on `sock`; returns whether the connection stays open.
pub(super) async fn respond(
    sock: &mut TrackedIo<TcpStream>,
    router: &Router,
    req: Box<DirectRequest>,
) -> io::Result<bool> {
    let DirectRequest { request, close } = *req;
    let is_head = request.method() == Method::HEAD;
    let response = match router.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    let asset = parts.extensions.remove::<DirectBody>();
    let framing = frame(
        &mut parts.headers,
        parts.status,
        is_head,
        body.size_hint().exact(),
    );
    if !parts.headers.contains_key(header::DATE)
        && let Ok(v) = HeaderValue::from_str(&http_date(now_secs()))
    {
        parts.headers.insert(header::DATE, v);
    }
    if close {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let head = encode_head(parts.status, &parts.headers);
    sock.write_all(&head).await?;
    match framing {
        Framing::None => {}
        Framing::Length(len) => {
            if let Some(asset) = asset.as_ref().and_then(DirectBody::take) {
                let stall = sock.limits().write_timeout;
                let sent = asset.send_to_socket(sock.get_ref(), stall).await?;
                if sent != len {
                    return Err(io::Error::other(format!(
                        "asset body is {sent} bytes, Content-Length said {len}"
                    )));
                }
            } else {
                write_body(sock, body, Some(len)).await?;
            }
        }
        Framing::Chunked => write_body(sock, body, None).await?,
    }
    Ok(!close)
}

/// Decides the framing and makes the headers say it (`Content-Length` from the body's exact
/// size when the handler set none, chunked otherwise).
fn frame(
    headers: &mut HeaderMap,
    status: StatusCode,
    is_head: bool,
    exact: Option<u64>,
) -> Framing {
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        return Framing::None;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let framing = match (declared, exact) {
        (Some(len), _) => Framing::Length(len),
        (None, Some(len)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Framing::Length(len)
        }
        (None, None) => {
            if !is_head {
                headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            Framing::Chunked
        }
    };
    if is_head { Framing::None } else { framing }
}

/// The status line and headers, CRLF-terminated.
fn encode_head(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes a streamed body: raw when `length` is known (and checked against it), chunked
/// otherwise. A body error ends the connection short of a complete response.
async fn write_body(
    sock: &mut TrackedIo<TcpStream>,
    mut body: Body,
    length: Option<u64>,
) -> io::Result<()> {
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        written += data.len() as u64;
        match length {
            Some(len) if written > len => {
                return Err(io::Error::other("body longer than its Content-Length"));
            }
            Some(_) => sock.write_all(&data).await?,
            None => {
                sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .await?;
                sock.write_all(&data).await?;
                sock.write_all(b"\r\n").await?;
            }
        }
    }
    match length {
        Some(len) if written != len => Err(io::Error::other(format!(
            "body ended after {written} of {len} bytes"
        ))),
        Some(_) => Ok(()),
        None => sock.write_all(b"0\r\n\r\n").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Option<Head> {
        classify(&mut BytesMut::from(raw.as_bytes()))
    }

    #[test]
    fn asset_gets_and_heads_qualify() {
        let mut buf = BytesMut::from(
            &b"GET /image/abc/v1.10.0/kernel-amd64 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\nGET /next"[..],
        );
        let Some(Head::Direct(req)) = classify(&mut buf) else {
            panic!("not direct");
        };
        assert_eq!(req.request.uri().path(), "/image/abc/v1.10.0/kernel-amd64");
        assert_eq!(req.request.headers()["range"], "bytes=0-1");
        assert!(!req.close);
        assert_eq!(&buf[..], b"GET /next", "only the head is consumed");
        let Some(Head::Direct(req)) =
            head("HEAD /image/a/b/c HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
        else {
            panic!("not direct");
        };
        assert!(req.close);
        assert_eq!(req.request.method(), Method::HEAD);
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(head("GET /image/a/b/c HTTP/1.1\r\nHost: x\r\n").is_none());
        assert!(head("GE").is_none());
    }

    #[test]
    fn everything_else_goes_to_hyper_untouched() {
        for raw in [
            "POST /image/a/b/c HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /schematics/x HTTP/1.1\r\n\r\n",
            "GET /image/a/b/c HTTP/1.0\r\n\r\n",
            "GET /image/a/b/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /image/a/b/c HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET /image/a/b/c HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /image/a/b/c HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /image/\x01 HTTP/1.1\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw.as_bytes());
            assert!(
                matches!(classify(&mut buf), Some(Head::Other)),
                "{raw:?} should go to hyper"
            );
            assert_eq!(&buf[..], raw.as_bytes(), "{raw:?} must be left unread");
        }
        let huge = format!("GET /image/a HTTP/1.1\r\nX: {}", "y".repeat(MAX_HEAD));
        assert!(matches!(head(&huge), Some(Head::Other)));
    }

    #[test]
    fn framing_follows_status_method_and_size() {
        let mut h = HeaderMap::new();
        assert_eq!(
            frame(&mut h, StatusCode::OK, false, Some(5)),
            Framing::Length(5)
        );
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        let mut h = HeaderMap::new();
        assert_eq!(frame(&mut h, StatusCode::OK, false, None), Framing::Chunked);
        assert_eq!(h[header::TRANSFER_ENCODING], "chunked");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(9u64));
        assert_eq!(frame(&mut h, StatusCode::OK, true, Some(0)), Framing::None);
        assert_eq!(
            h[header::CONTENT_LENGTH],
            "9",
            "HEAD keeps the declared length"
        );
        let mut h = HeaderMap::new();
        assert_eq!(
            frame(&mut h, StatusCode::NOT_MODIFIED, false, Some(0)),
            Framing::None
        );
        assert!(h.is_empty());
    }

    #[test]
    fn head_is_a_status_line_and_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(3u64));
        let out = encode_head(StatusCode::PARTIAL_CONTENT, &h);
        assert_eq!(
            out,
            b"HTTP/1.1 206 Partial Content\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
