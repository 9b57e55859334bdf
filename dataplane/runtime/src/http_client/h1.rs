//! One plain HTTP/1.1 connection to an origin, driven by the request that uses it.
//!
//! hyper's client connection is a task of its own that a request reaches through a channel, and
//! whose answer comes back through another (its body through a third): three task wake-ups per
//! exchange, which measured 1.0–1.7 µs of CPU per request on the bench's bare per-core proxy,
//! more than the Link's five layers together. Here the request's own future writes its head
//! and body and reads the answer's head; the answer's body reads the rest from the same socket.
//! Parsing is httparse's (hyper's own parser); framing follows RFC 9112: a request body of known
//! length is sent with `content-length`, any other chunked; an answer is framed by
//! `transfer-encoding: chunked`, `content-length` or the connection's end, and has no body to
//! `HEAD`, 1xx, 204 and 304.
//! Interim (1xx) answers are skipped, as hyper does. An answer that arrives while the request's
//! body is still being sent ends the sending, and the connection is closed after it.

use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{list_items, RequestError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest answer head read (status line and headers). hyper's client allows ~400 KiB for
/// its whole read buffer; the head of a real answer is a few hundred bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers in an answer's head (hyper's client default).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line and the most trailer bytes of a chunked answer.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// What is gathered before it is written: the head and the body frames that are ready.
const WRITE_BATCH: usize = 64 * 1024;
/// A body frame larger than this is written from its own buffer.
const COPY_AT_MOST: usize = 16 * 1024;
/// The most buffer room an idle connection keeps.
const IDLE_ROOM: usize = 16 * 1024;
/// A read asks for at least this much room.
const READ_ROOM: usize = 8 * 1024;

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("writing the request failed")]
    Write(#[source] io::Error),
    #[error("reading the answer failed")]
    Read(#[source] io::Error),
    #[error("the connection closed before the answer was complete")]
    Incomplete,
    #[error("the answer is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
    #[error(
        "the answer's head is larger than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"
    )]
    HeadTooLarge,
    #[error("the request body failed")]
    Body(#[source] BoxError),
    #[error("the request body is {0} than its content-length")]
    BodyLength(&'static str),
    /// The body of an answer over TLS (hyper-util's client).
    #[error(transparent)]
    Tls(hyper::Error),
}

/// A connection and what was read on it and not yet consumed.
pub(super) struct Conn {
    io: TcpStream,
    read: BytesMut,
    /// The request being written: its head and the body frames gathered with it.
    write: Vec<u8>,
}

/// How a request body is framed.
#[derive(Clone, Copy, PartialEq)]
enum Sending {
    Length { left: u64 },
    Chunked,
}

/// How an answer's body is framed.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one, this many bytes read.
    Trailers(usize),
}

/// An answer's head as the exchange read it, and how the rest of the connection is used.
pub(super) struct Answer {
    pub response: Response<()>,
    pub body: AnswerBody,
}

/// The body of an answer on its connection; the connection can take another request once the
/// body is read to its end (see [`AnswerBody::take_reusable`]).
pub(super) struct AnswerBody {
    conn: Option<Conn>,
    framing: Option<Framing>,
    keep_alive: bool,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Self {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether the peer closed (or wrote to) the connection while it was idle, known without a
    /// system call in the common case: the readiness the runtime already saw.
    pub(super) fn closed_while_idle(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            // Readable: the end of the stream, an error, or bytes nobody asked for; or only a
            // readiness left over from the last read, which a read without waiting tells.
            Poll::Ready(_) => !matches!(
                self.io.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Sends `request` (its URI already in origin form, its `Host` set) on `conn` and reads its
    /// answer's head. A connection from the pool (`reused`) that the server closed while it sat
    /// idle takes the request to a connection from `connect`: when nothing was written yet, or
    /// when the whole request is still at hand, its method is idempotent and the server ended
    /// the connection without a byte of answer (RFC 9110 §9.2.2; Go's client does the same).
    pub(super) async fn exchange<B, C, F>(
        mut self,
        mut reused: bool,
        request: Request<B>,
        connect: C,
    ) -> Result<Answer, RequestError>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>>,
        C: Fn() -> F,
        F: std::future::Future<Output = Result<Conn, RequestError>>,
    {
        let (parts, body) = request.into_parts();
        let mut body = std::pin::pin!(body);
        let mut send = Outgoing {
            sending: self.write_head(&parts, &body),
            ended: body.is_end_stream(),
            written: 0,
            replayable: parts.method.is_idempotent(),
            wrote_any: false,
            big: Bytes::new(),
        };
        if let (true, Sending::Length { left: 1.. }) = (send.ended, send.sending) {
            return Err(RequestError::Exchange(ExchangeError::BodyLength("shorter")));
        }
        let head_only = parts.method == Method::HEAD;
        let closing = has_token(&parts.headers, "close");
        loop {
            let sent = poll_fn(|cx| self.poll_send(cx, body.as_mut(), &mut send)).await;
            let answer_first = match sent {
                Ok(answer_first) => answer_first,
                Err(e) if reused && !send.wrote_any && closed_before_answering(&e) => {
                    tracing::debug!(error = %e, "a pooled connection was closed; sending again");
                    self = self.moved_to(connect().await?);
                    reused = false;
                    continue;
                }
                Err(e) => return Err(RequestError::Exchange(e)),
            };
            match poll_fn(|cx| self.poll_head(cx, head_only)).await {
                Ok((response, framing)) => {
                    let keep_alive = !answer_first
                        && !closing
                        && keeps_alive(&response)
                        && !matches!(framing, Some(Framing::UntilClose));
                    let mut body = AnswerBody {
                        conn: Some(self),
                        framing,
                        keep_alive,
                    };
                    body.end_if_empty();
                    return Ok(Answer { response, body });
                }
                Err(e)
                    if reused
                        && send.ended
                        && send.replayable
                        && self.read.is_empty()
                        && closed_before_answering(&e) =>
                {
                    tracing::debug!("a pooled connection ended without answering; sending again");
                    send.written = 0;
                    send.wrote_any = false;
                    self = self.moved_to(connect().await?);
                    reused = false;
                }
                Err(e) => return Err(RequestError::Exchange(e)),
            }
        }
    }

    /// `fresh`, with what this connection had still to write.
    fn moved_to(self, mut fresh: Conn) -> Conn {
        fresh.write = self.write;
        fresh
    }

    /// Writes the request line and headers into the write buffer, with the body's framing.
    fn write_head<B: Body>(&mut self, parts: &http::request::Parts, body: &B) -> Sending {
        let w = &mut self.write;
        w.clear();
        w.extend_from_slice(parts.method.as_str().as_bytes());
        w.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let sending = match body.size_hint().exact().or(declared) {
            Some(left) => Sending::Length { left },
            None if body.is_end_stream() => Sending::Length { left: 0 },
            None => Sending::Chunked,
        };
        for (name, value) in &parts.headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        match sending {
            // A request that carries no body and whose method defines none says nothing.
            Sending::Length { left: 0 } if bodiless(&parts.method) && declared.is_none() => {}
            Sending::Length { left } => {
                w.extend_from_slice(b"content-length: ");
                w.extend_from_slice(itoa::Buffer::new().format(left).as_bytes());
                w.extend_from_slice(b"\r\n");
            }
            Sending::Chunked => w.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        w.extend_from_slice(b"\r\n");
        debug_assert!(parts.headers.contains_key(HOST));
        sending
    }

    /// Gathers the body's ready frames behind what is to be written, writes, and repeats until
    /// the body has ended and everything is written (`Ok(false)`), or an answer arrived first
    /// (`Ok(true)`).
    fn poll_send<B>(
        &mut self,
        cx: &mut Context<'_>,
        mut body: Pin<&mut B>,
        send: &mut Outgoing,
    ) -> Poll<Result<bool, ExchangeError>>
    where
        B: Body<Data = Bytes, Error: Into<BoxError>>,
    {
        loop {
            let mut body_pending = false;
            while !send.ended && send.big.is_empty() && self.write.len() < WRITE_BATCH {
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.gather(send, data)?;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(ExchangeError::Body(e.into())))
                    }
                    Poll::Ready(None) => {
                        send.ended = true;
                        match send.sending {
                            Sending::Length { left: 0 } => {}
                            Sending::Length { .. } => {
                                return Poll::Ready(Err(ExchangeError::BodyLength("shorter")))
                            }
                            Sending::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                        }
                    }
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                }
            }
            if send.written == self.write.len() && send.big.is_empty() {
                if send.ended {
                    return Poll::Ready(Ok(false));
                }
                // Written out: the buffer is free for the next frames (the request can no
                // longer be sent again as a whole).
                self.write.clear();
                send.written = 0;
                send.replayable = false;
                if !body_pending {
                    continue;
                }
                // Waiting on the body: the server may answer meanwhile.
                return self.poll_answer_first(cx);
            }
            let small = &self.write[send.written..];
            let io = Pin::new(&mut self.io);
            let polled = match (small.is_empty(), send.big.is_empty()) {
                (_, true) => io.poll_write(cx, small),
                (true, false) => io.poll_write(cx, &send.big),
                (false, false) => io.poll_write_vectored(
                    cx,
                    &[io::IoSlice::new(small), io::IoSlice::new(&send.big)],
                ),
            };
            match polled {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ExchangeError::Write(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    send.wrote_any = true;
                    let from_small = n.min(small.len());
                    send.written += from_small;
                    if n > from_small {
                        send.big.advance(n - from_small);
                        if send.big.is_empty() && send.sending == Sending::Chunked {
                            self.write.extend_from_slice(b"\r\n");
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Write(e))),
                Poll::Pending => return self.poll_answer_first(cx),
            }
        }
    }

    /// Appends one body frame, framed; a large one is written from where it is, not copied.
    fn gather(&mut self, send: &mut Outgoing, data: Bytes) -> Result<(), ExchangeError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut send.sending {
            Sending::Length { left } => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(ExchangeError::BodyLength("longer"))?;
            }
            Sending::Chunked => {
                let mut size = [0u8; 16];
                self.write.extend_from_slice(hex(data.len(), &mut size));
                self.write.extend_from_slice(b"\r\n");
            }
        }
        if data.len() > COPY_AT_MOST {
            // Not kept for sending again: only a request that fits in the buffer is.
            send.replayable = false;
            send.big = data;
            return Ok(());
        }
        self.write.extend_from_slice(&data);
        if send.sending == Sending::Chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// While the request is still being sent: whether the answer's head has arrived (the server
    /// answered without waiting for the rest of the body).
    fn poll_answer_first(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ExchangeError>> {
        loop {
            match parse_head(&self.read)? {
                // An interim answer (`100 Continue`) is no answer: the body goes on.
                Some(head)
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    self.read.advance(head.len);
                    continue;
                }
                Some(_) => return Poll::Ready(Ok(true)),
                None => {}
            }
            if ready!(self.poll_fill(cx)).map_err(ExchangeError::Read)? == 0 {
                return Poll::Ready(Err(ExchangeError::Incomplete));
            }
        }
    }

    /// Reads into the read buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_fill_room(cx, READ_ROOM)
    }

    fn poll_fill_room(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        self.read.reserve(room);
        let spare = self.read.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
        unsafe { self.read.set_len(self.read.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// Reads the answer's head, skipping interim answers; the framing of its body (`None`: it
    /// has none).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_only: bool,
    ) -> Poll<Result<AnswerHead, ExchangeError>> {
        loop {
            if let Some(head) = parse_head(&self.read)? {
                let bytes = self.read.split_to(head.len).freeze();
                if head.status.is_informational() {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Poll::Ready(Err(ExchangeError::Invalid(
                            "101 Switching Protocols to a request that asked for no upgrade",
                        )));
                    }
                    continue;
                }
                let response = head.into_response(&bytes)?;
                let framing = framing_of(&response, head_only)?;
                return Poll::Ready(Ok((response, framing)));
            }
            if ready!(self.poll_fill(cx)).map_err(ExchangeError::Read)? == 0 {
                return Poll::Ready(Err(ExchangeError::Incomplete));
            }
        }
    }
}

/// A request on its way out.
struct Outgoing {
    sending: Sending,
    /// The body has ended.
    ended: bool,
    /// How much of the write buffer is written.
    written: usize,
    /// The whole request is still in the write buffer, and its method lets it be sent again.
    replayable: bool,
    /// Some of the request reached the connection.
    wrote_any: bool,
    /// A large body frame being written from its own buffer (then, if chunked, its CRLF).
    big: Bytes,
}

/// The connection was closed or reset under the request, before any answer.
fn closed_before_answering(e: &ExchangeError) -> bool {
    let closed = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        )
    };
    match e {
        ExchangeError::Incomplete => true,
        ExchangeError::Read(e) | ExchangeError::Write(e) => closed(e),
        _ => false,
    }
}

/// Methods whose requests define no body: an empty one is sent without `content-length`.
fn bodiless(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

/// `n` in lowercase hexadecimal.
fn hex(mut n: usize, out: &mut [u8; 16]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &out[at..];
        }
    }
}

/// An answer's head, and the framing of its body (`None`: it has none).
type AnswerHead = (Response<()>, Option<Framing>);

/// A parsed head, as offsets into the bytes it was parsed from.
struct Head {
    len: usize,
    status: StatusCode,
    version: Version,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(ExchangeError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ExchangeError::HeadTooLarge),
        Err(_) => return Err(ExchangeError::Invalid("a malformed status line or header")),
    };
    if len > MAX_HEAD {
        return Err(ExchangeError::HeadTooLarge);
    }
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ExchangeError::Invalid("a status code out of range"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let headers = response
        .headers
        .iter()
        .map(|h| (at(h.name.as_bytes()), at(h.value)))
        .collect();
    Ok(Some(Head {
        len,
        status,
        version,
        headers,
    }))
}

impl Head {
    /// The head as a response; header values share `bytes` (the head's own bytes).
    fn into_response(self, bytes: &Bytes) -> Result<Response<()>, ExchangeError> {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(&bytes[name])
                .map_err(|_| ExchangeError::Invalid("a header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value))
                .map_err(|_| ExchangeError::Invalid("a header value"))?;
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// How the body of `response` is framed (RFC 9112 §6.3); `None`: it has none.
fn framing_of(response: &Response<()>, head_only: bool) -> Result<Option<Framing>, ExchangeError> {
    let status = response.status();
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let headers = response.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        let chunked = list_items(headers, TRANSFER_ENCODING)
            .next_back()
            .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        return Ok(Some(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        }));
    }
    let mut length = None;
    for part in list_items(headers, CONTENT_LENGTH) {
        let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
            .flatten()
            .ok_or(ExchangeError::Invalid(
                "a content-length that is not a number",
            ))?;
        if length.is_some_and(|l| l != n) {
            return Err(ExchangeError::Invalid("content-lengths that differ"));
        }
        length = Some(n);
    }
    Ok(Some(match length {
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }))
}

/// Whether the connection may carry another request after this answer.
fn keeps_alive(response: &Response<()>) -> bool {
    match response.version() {
        Version::HTTP_10 => has_token(response.headers(), "keep-alive"),
        _ => !has_token(response.headers(), "close"),
    }
}

/// Whether `Connection` lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    list_items(headers, CONNECTION).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

impl AnswerBody {
    /// The connection, once the body was read to its end and the connection can carry
    /// another request.
    pub(super) fn take_reusable(&mut self) -> Option<Conn> {
        if self.framing.is_some() || !self.keep_alive {
            return None;
        }
        // Bytes beyond the answer: the server broke the framing.
        let mut conn = self.conn.take().filter(|c| c.read.is_empty())?;
        // An idle connection holds no large buffer: the last request's may have been.
        conn.write.clear();
        if conn.write.capacity() > IDLE_ROOM {
            conn.write = Vec::new();
        }
        if conn.read.capacity() > IDLE_ROOM {
            conn.read = BytesMut::new();
        }
        Some(conn)
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.framing.is_none()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match &self.framing {
            None => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }

    fn end_if_empty(&mut self) {
        if matches!(self.framing, Some(Framing::Length(0))) {
            self.framing = None;
        }
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let (Some(framing), Some(conn)) = (self.framing.as_mut(), self.conn.as_mut()) else {
            return Poll::Ready(None);
        };
        let polled = match framing {
            Framing::Length(left) => poll_length(conn, cx, left),
            // What arrived is handed out before waiting for more (a stream framed by its end).
            Framing::UntilClose if !conn.read.is_empty() => {
                Poll::Ready(Ok(Some(conn.read.split().freeze())))
            }
            Framing::UntilClose => match ready!(conn.poll_fill_room(cx, READ_ROOM)) {
                Ok(0) => Poll::Ready(Ok(None)),
                Ok(_) => Poll::Ready(Ok(Some(conn.read.split().freeze()))),
                Err(e) => Poll::Ready(Err(ExchangeError::Read(e))),
            },
            Framing::Chunked(chunk) => poll_chunked(conn, cx, chunk),
        };
        match ready!(polled) {
            Ok(Some(data)) => {
                self.end_if_empty();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                self.framing = None;
                Poll::Ready(None)
            }
            Err(e) => {
                self.framing = None;
                self.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// The next part of a body of `left` more bytes; its end is when `left` reaches 0.
fn poll_length(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    left: &mut u64,
) -> Poll<Result<Option<Bytes>, ExchangeError>> {
    if conn.read.is_empty() {
        let room = usize::try_from(*left)
            .unwrap_or(usize::MAX)
            .clamp(READ_ROOM, 64 * 1024);
        if ready!(conn.poll_fill_room(cx, room)).map_err(ExchangeError::Read)? == 0 {
            return Poll::Ready(Err(ExchangeError::Incomplete));
        }
    }
    let take = conn
        .read
        .len()
        .min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= take as u64;
    Poll::Ready(Ok(Some(conn.read.split_to(take).freeze())))
}

/// The next data of a chunked body; `None` after the last chunk and its trailers (which are
/// read and dropped, as hyper's client does by default).
fn poll_chunked(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    chunk: &mut Chunk,
) -> Poll<Result<Option<Bytes>, ExchangeError>> {
    loop {
        match *chunk {
            Chunk::Size => match httparse::parse_chunk_size(&conn.read) {
                Ok(httparse::Status::Complete((len, 0))) => {
                    conn.read.advance(len);
                    *chunk = Chunk::Trailers(0);
                    continue;
                }
                Ok(httparse::Status::Complete((len, size))) => {
                    conn.read.advance(len);
                    *chunk = Chunk::Data(size);
                    continue;
                }
                Ok(httparse::Status::Partial) if conn.read.len() < MAX_CHUNK_LINE => {}
                _ => return Poll::Ready(Err(ExchangeError::Invalid("a chunk size line"))),
            },
            Chunk::Data(left) if !conn.read.is_empty() => {
                let take = conn
                    .read
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = conn.read.split_to(take).freeze();
                *chunk = match left - take as u64 {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data(left),
                };
                return Poll::Ready(Ok(Some(data)));
            }
            Chunk::Data(_) => {}
            Chunk::DataEnd if conn.read.len() >= 2 => {
                if &conn.read[..2] != b"\r\n" {
                    return Poll::Ready(Err(ExchangeError::Invalid("a chunk not ended by CRLF")));
                }
                conn.read.advance(2);
                *chunk = Chunk::Size;
                continue;
            }
            Chunk::DataEnd => {}
            Chunk::Trailers(seen) => {
                if let Some(end) = conn.read.windows(2).position(|w| w == b"\r\n") {
                    conn.read.advance(end + 2);
                    if end == 0 {
                        return Poll::Ready(Ok(None));
                    }
                    *chunk = Chunk::Trailers(seen + end + 2);
                    continue;
                }
                if seen + conn.read.len() > MAX_CHUNK_LINE {
                    return Poll::Ready(Err(ExchangeError::Invalid("trailers too large")));
                }
            }
        }
        if ready!(conn.poll_fill(cx)).map_err(ExchangeError::Read)? == 0 {
            return Poll::Ready(Err(ExchangeError::Incomplete));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http::Uri;
    use http_body_util::{BodyExt, Empty, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::http_client::plain_pool::{PlainPool, ResponseBody};
    use crate::http_client::{ClientSettings, POOL_IDLE_TIMEOUT};

    /// A real TCP server that reads each request whole (by its `content-length` or chunked
    /// framing), keeps its bytes, and answers with the next of `answers`, closing the
    /// connection after an answer that says `connection: close` or is framed by the end.
    struct Scripted {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<String>>>,
        accepted: Arc<AtomicUsize>,
    }

    async fn scripted(answers: Vec<Vec<u8>>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let (seen, counter) = (Arc::clone(&requests), Arc::clone(&accepted));
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let (seen, answers) = (Arc::clone(&seen), Arc::clone(&answers));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(request) = read_request(&mut tcp, &mut buf).await else {
                            return;
                        };
                        seen.lock().unwrap().push(request);
                        let answer = answers.lock().unwrap().pop_front().unwrap();
                        tcp.write_all(&answer).await.unwrap();
                        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
                        let framed = ["content-length", "chunked", " 204 ", " 304 "]
                            .iter()
                            .any(|f| text.contains(f));
                        if text.contains("connection: close") || !framed {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            requests,
            accepted,
        }
    }

    async fn read_request(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        let complete = |buf: &[u8]| -> Option<usize> {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if head.contains("transfer-encoding: chunked") {
                let end = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
                return Some(head_end + end + 5);
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            (buf.len() >= head_end + length).then_some(head_end + length)
        };
        loop {
            if let Some(end) = complete(buf) {
                let request = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end);
                return Some(request);
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A body of unknown length: `frames` one at a time, then its end, or nothing ever more.
    struct Frames {
        frames: std::collections::VecDeque<&'static str>,
        endless: bool,
    }

    fn frames(frames: &[&'static str], endless: bool) -> Frames {
        Frames {
            frames: frames.iter().copied().collect(),
            endless,
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.frames.pop_front() {
                Some(data) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data.as_bytes())))))
                }
                None if self.endless => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn pool(addr: SocketAddr) -> Arc<PlainPool> {
        Arc::new(PlainPool::new(
            ClientSettings::default().tcp_connector(),
            format!("http://{addr}/").parse().unwrap(),
            HeaderValue::from_str(&addr.to_string()).unwrap(),
            POOL_IDLE_TIMEOUT,
        ))
    }

    async fn read(answer: Response<ResponseBody>) -> Result<String, ExchangeError> {
        let body = answer.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(method: Method) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = method;
        *request.uri_mut() = Uri::from_static("/p");
        request
    }

    #[tokio::test]
    async fn answers_framed_every_way_are_read_and_the_connection_kept_when_it_can_be() {
        let server = scripted(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\nabc".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n".to_vec(),
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
        ])
        .await;
        let pool = pool(server.addr);
        let chunked = pool.request(get(Method::GET)).await.unwrap();
        assert_eq!(read(chunked).await.unwrap(), "hello!");
        let interim = pool.request(get(Method::GET)).await.unwrap();
        assert_eq!(interim.status(), 200);
        let values: Vec<_> = interim.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(read(interim).await.unwrap(), "abc");
        let head = pool.request(get(Method::HEAD)).await.unwrap();
        assert_eq!(head.headers()[CONTENT_LENGTH], "7");
        assert!(head.body().is_end_stream());
        assert_eq!(read(head).await.unwrap(), "");
        for status in [204, 304] {
            let empty = pool.request(get(Method::GET)).await.unwrap();
            assert_eq!(empty.status(), status);
            assert_eq!(read(empty).await.unwrap(), "");
        }
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            1,
            "all on one connection"
        );
        let until_close = pool.request(get(Method::GET)).await.unwrap();
        assert_eq!(read(until_close).await.unwrap(), "until the end");
        assert!(
            pool.checkout().is_none(),
            "a body framed by the end is not kept"
        );
    }

    #[tokio::test]
    async fn a_body_framed_by_the_end_is_handed_out_as_it_arrives() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_on, told) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            read_request(&mut tcp, &mut Vec::new()).await.unwrap();
            tcp.write_all(b"HTTP/1.0 200 OK\r\n\r\nfirst")
                .await
                .unwrap();
            told.await.unwrap();
            tcp.write_all(b" second").await.unwrap();
        });
        let pool = pool(addr);
        let mut body = pool.request(get(Method::GET)).await.unwrap().into_body();
        // A watchdog, not a timing assertion: held back, the first bytes would never come.
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), body.frame())
            .await
            .expect("what arrived is handed out before the server goes on or closes");
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first");
        go_on.send(()).unwrap();
        assert_eq!(read(Response::new(body)).await.unwrap(), " second");
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_their_length_or_chunked() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
        let server = scripted(vec![ok.clone(); 4]).await;
        let pool = pool(server.addr);
        pool.request(get(Method::GET)).await.unwrap();
        let mut post = Request::new(Full::new(Bytes::from_static(b"{\"a\":1}")));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = Uri::from_static("/in?q=1");
        pool.request(post).await.unwrap();
        let mut streamed = Request::new(frames(&["ab", "", "cde"], false));
        *streamed.method_mut() = Method::PUT;
        pool.request(streamed).await.unwrap();
        let mut empty_post = get(Method::POST);
        *empty_post.uri_mut() = Uri::from_static("/e");
        pool.request(empty_post).await.unwrap();
        let host = server.addr;
        assert_eq!(
            *server.requests.lock().unwrap(),
            [
                format!("GET /p HTTP/1.1\r\nhost: {host}\r\n\r\n"),
                format!("POST /in?q=1 HTTP/1.1\r\nhost: {host}\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}"),
                format!("PUT / HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
                format!("POST /e HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\n\r\n"),
            ]
        );
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_head_at_the_bound_is_read_and_one_past_it_is_refused() {
        let head_with = |filler: usize| {
            let start = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-f: ";
            let mut head = start.to_owned();
            head.push_str(&"f".repeat(filler - start.len() - 4));
            head.push_str("\r\n\r\n");
            assert_eq!(head.len(), filler);
            head.into_bytes()
        };
        let headers = |n: usize| {
            let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
            for i in 1..n {
                head.push_str(&format!("x-{i}: v\r\n"));
            }
            head.push_str("\r\n");
            head.into_bytes()
        };
        let server = scripted(vec![
            head_with(MAX_HEAD),
            headers(MAX_HEADERS),
            head_with(MAX_HEAD + 1),
            headers(MAX_HEADERS + 1),
        ])
        .await;
        let pool = pool(server.addr);
        let at_bound = pool.request(get(Method::GET)).await.unwrap();
        assert_eq!(at_bound.status(), 200);
        assert_eq!(read(at_bound).await.unwrap(), "");
        let most = pool.request(get(Method::GET)).await.unwrap();
        assert_eq!(most.headers().len(), MAX_HEADERS);
        assert_eq!(read(most).await.unwrap(), "");
        for _ in 0..2 {
            let error = pool.request(get(Method::GET)).await.unwrap_err();
            assert!(
                matches!(error, RequestError::Exchange(ExchangeError::HeadTooLarge)),
                "{error:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_chunk_size_line_or_trailers_past_their_bound_are_refused() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let line =
            |extension: usize| format!("{chunked}2;{}\r\nok\r\n0\r\n\r\n", "e".repeat(extension));
        let trailer = |value: usize| {
            format!(
                "{chunked}2\r\nok\r\n0\r\nx-t: {}\r\n\r\n",
                "t".repeat(value)
            )
        };
        // Past the bound the line or the trailers never end: the client stops reading there.
        let endless_line = format!("{chunked}2;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        let endless_trailer = format!(
            "{chunked}2\r\nok\r\n0\r\nx-t: {}",
            "t".repeat(MAX_CHUNK_LINE + 1)
        );
        let server = scripted(
            [
                line(MAX_CHUNK_LINE - 8),
                trailer(MAX_CHUNK_LINE - 8),
                endless_line,
                endless_trailer,
            ]
            .map(String::into_bytes)
            .to_vec(),
        )
        .await;
        let pool = pool(server.addr);
        for _ in 0..2 {
            let answer = pool.request(get(Method::GET)).await.unwrap();
            assert_eq!(read(answer).await.unwrap(), "ok");
        }
        for _ in 0..2 {
            let answer = pool.request(get(Method::GET)).await.unwrap();
            assert!(matches!(read(answer).await, Err(ExchangeError::Invalid(_))));
        }
    }

    #[tokio::test]
    async fn a_malformed_answer_is_an_error_and_its_connection_is_not_kept() {
        let server = scripted(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nab".to_vec(),
            b"NOT HTTP\r\n\r\n".to_vec(),
        ])
        .await;
        let pool = pool(server.addr);
        for _ in 0..2 {
            let error = pool.request(get(Method::GET)).await.unwrap_err();
            assert!(
                matches!(error, RequestError::Exchange(ExchangeError::Invalid(_))),
                "{error:?}"
            );
        }
        let bad_chunk = pool.request(get(Method::GET)).await.unwrap();
        assert!(matches!(
            read(bad_chunk).await,
            Err(ExchangeError::Invalid(_))
        ));
        let cut = pool.request(get(Method::GET)).await.unwrap();
        assert!(matches!(read(cut).await, Err(ExchangeError::Incomplete)));
        let error = pool.request(get(Method::GET)).await.unwrap_err();
        assert!(
            matches!(error, RequestError::Exchange(ExchangeError::Invalid(_))),
            "{error:?}"
        );
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            5,
            "none was used twice"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_body_ends_ends_the_sending_and_its_connection() {
        // A server that answers as soon as the head arrives, while the body never ends.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tcp.read(&mut head).await;
            tcp.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        let pool = pool(addr);
        let mut upload = Request::new(frames(&["part"], true));
        *upload.method_mut() = Method::POST;
        let answer = pool.request(upload).await.unwrap();
        assert_eq!(answer.status(), 413);
        assert_eq!(read(answer).await.unwrap(), "big!");
        assert!(
            pool.checkout().is_none(),
            "a connection with a request half sent is closed"
        );
    }

    #[tokio::test]
    async fn a_body_longer_than_its_content_length_is_refused() {
        let server = scripted(vec![]).await;
        let pool = pool(server.addr);
        let mut streamed = Request::new(frames(&["12345"], false));
        *streamed.method_mut() = Method::POST;
        streamed
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let error = pool.request(streamed).await.unwrap_err();
        assert!(
            matches!(
                error,
                RequestError::Exchange(ExchangeError::BodyLength("longer"))
            ),
            "{error:?}"
        );
    }
}
