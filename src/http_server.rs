//! The HTTP server behind every listener a role opens.
//!
//! It is `axum::serve` with connection settings axum does not expose:
//! `TCP_NODELAY` on every accepted socket; a bound on how far hyper grows a
//! connection's read buffer (hyper's default lets it grow to about 400 KiB;
//! with Claude Code's 78 KB request bodies that was 16 MiB of `tollgate
//! serve`'s heap at 64 connections, heaptrack, 2026-12-03); and a deadline
//! for a request's headers, without which a client that trickles them
//! holds its connection (and its buffer) for as long as it likes.
//! Shutdown is axum's: stop accepting, tell each connection to finish the
//! request it is on, wait for all of them.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;

/// The most bytes hyper holds from one connection before handing them to
/// the handler as body chunks. Headers must fit in it (a request whose
/// headers do not gets 431): twice what Node, Claude Code's runtime,
/// accepts by default (16 KiB), room for a proxy's added headers. A body
/// larger than it arrives in several chunks, which the gateway joins into
/// one buffer anyway; what the size decides is how much each keep-alive
/// connection keeps between requests. At 64 KiB, 64 connections sending
/// Claude Code's 74 KB bodies kept ~14 MiB of such buffers (heaptrack) and
/// `tollgate serve` peaked at 71–92 MiB resident; at 32 KiB, 67–68 MiB
/// (16 KiB: 64–67), with the same requests/s (2026-12-03).
pub const READ_BUFFER_MAX: usize = 32 * 1024;

/// What client connections may hold the server to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers, from the connection's start or
    /// the end of its previous answer (`server.header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// Most connections served at once (`server.max_connections`); more
    /// wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits `[server]` sets.
    pub fn from_config(server: &crate::config::ServerConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            max_connections: server.max_connections,
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then waits for
/// every open connection to finish its current request.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    // Each connection holds a sender; `recv` returns `None` once the last
    // one is dropped, i.e. once every connection has closed.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    // A connection costs a task, a socket and up to READ_BUFFER_MAX of
    // buffer whether or not it ever authenticates: their number is bounded
    // by not accepting while at the limit.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                let open = OpenConnection::new(slot, open_tx.clone());
                let (app, stop) = (app.clone(), stop.clone());
                tokio::spawn(async move {
                    serve_connection(tcp, app, limits, stop).await;
                    drop(open);
                });
            }
            Err(e) => on_accept_error(e).await,
        }
    }
    drop(listener);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// An accepted connection, from accept until it closes however its task
/// ends: its place under `max_connections`, its count in
/// `tollgate_http_connections_open`, and what shutdown waits for.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    _open: mpsc::Sender<()>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, open: mpsc::Sender<()>) -> OpenConnection {
        METRICS.http_connections.inc();
        OpenConnection {
            _slot: slot,
            _open: open,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.http_connections.dec();
    }
}

/// Serves one connection's requests (HTTP/1.1, or HTTP/2 by prior
/// knowledge) until the client closes it or `stop` asks it to finish.
async fn serve_connection(
    tcp: TcpStream,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    // Small SSE events must leave at once, not wait out Nagle's algorithm
    // against the client's delayed ACK (~40 ms at a stream's end).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on a client connection");
    }
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(READ_BUFFER_MAX)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let service = TowerToHyperService::new(app);
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(tcp), service));
    let finished = tokio::select! {
        finished = conn.as_mut() => finished,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = finished {
        tracing::trace!(error = %e, "client connection ended with an error");
    }
}

/// Errors from `accept` that concern one connection (the client gave up
/// during the handshake) are skipped; others (out of file descriptors)
/// would repeat at once, so the loop pauses before trying again.
async fn on_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    /// A server on a loopback port whose one route tells `entered`, waits
    /// `delay`, and answers with the body's length.
    async fn start(delay: Duration) -> (std::net::SocketAddr, CancellationToken, Arc<Notify>) {
        start_with(delay, limits(Duration::from_secs(60), 64)).await
    }

    /// Limits with `header_read_timeout` and `max_connections`.
    fn limits(header_read_timeout: Duration, max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout,
            max_connections,
        }
    }

    /// [`start`] with `limits`.
    async fn start_with(
        delay: Duration,
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, CancellationToken, Arc<Notify>) {
        let entered = Arc::new(Notify::new());
        let tell = entered.clone();
        let app = axum::Router::new().route(
            "/len",
            post(move |body: axum::body::Bytes| async move {
                tell.notify_one();
                tokio::time::sleep(delay).await;
                body.len().to_string()
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, app, limits, stop.clone()));
        (addr, stop, entered)
    }

    /// Sends one HTTP/1.1 request with `header` and a body of `body_len`
    /// bytes and returns the whole response (the request closes the
    /// connection).
    async fn request(addr: std::net::SocketAddr, header: &str, body_len: usize) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /len HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{header}content-length: {body_len}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (431) before the body is sent.
        let _ = tcp.write_all(&vec![b'x'; body_len]).await;
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_body_larger_than_the_read_buffer_arrives_whole() {
        let (addr, ..) = start(Duration::ZERO).await;
        let len = READ_BUFFER_MAX * 5 + 17;
        let response = request(addr, "", len).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&len.to_string()), "{response}");
    }

    #[tokio::test]
    async fn headers_past_nodes_16_kib_default_are_served() {
        let (addr, ..) = start(Duration::ZERO).await;
        // What a proxy in front of tollgate may add to Claude Code's own.
        let extra = format!("x-forwarded-identity: {}\r\n", "j".repeat(20 * 1024));
        let response = request(addr, &extra, 3).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    #[tokio::test]
    async fn headers_larger_than_the_read_buffer_are_refused_with_431() {
        let (addr, ..) = start(Duration::ZERO).await;
        let big = format!("x-padding: {}\r\n", "p".repeat(READ_BUFFER_MAX));
        let response = request(addr, &big, 3).await;
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");
        // The server keeps serving others.
        assert!(request(addr, "", 3).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn stopping_finishes_the_request_in_flight_and_refuses_new_ones() {
        let (addr, stop, entered) = start(Duration::from_millis(200)).await;
        let in_flight = tokio::spawn(request(addr, "", 5));
        tokio::time::timeout(Duration::from_secs(5), entered.notified())
            .await
            .expect("the request reaches the handler");
        stop.cancel();
        let response = in_flight.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_client_that_trickles_its_headers_is_cut_off_at_the_deadline() {
        let limits = limits(Duration::from_millis(300), 64);
        let (addr, ..) = start_with(Duration::ZERO, limits).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /len HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap();
        // The server closes the connection (with a 408 or without an
        // answer); the client never finished its headers.
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection is still open after 10 s");
        let answer = String::from_utf8_lossy(&out);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        // Others are still served.
        assert!(request(addr, "", 3).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_waits_until_one_closes() {
        let limits = limits(Duration::from_secs(60), 1);
        let (addr, ..) = start_with(Duration::ZERO, limits).await;
        // The first connection is served and kept open (keep-alive).
        let mut first = TcpStream::connect(addr).await.unwrap();
        first
            .write_all(b"POST /len HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nab")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        first.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        // Other tests' connections may be counted too, never fewer.
        assert!(METRICS.http_connections.get() >= 1);
        // The second is left in the accept queue while the first is open.
        let second = tokio::spawn(request(addr, "", 4));
        let early = tokio::time::timeout(Duration::from_millis(300), async {
            while !second.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(early.is_err(), "served beyond the limit");
        drop(first);
        let response = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("served once the first connection closed")
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}
