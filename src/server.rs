//! Serving the API: peer credentials read at accept on the Unix socket,
//! the client address on loopback TCP, HTTP/1.1 per connection, graceful
//! shutdown that finishes requests in flight.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::accounts::UserId;
use crate::api::{ClientAddr, Peer};

/// Connections open at once per listener; beyond it new ones are closed
/// at once, so descriptors remain for the daemon's own file work.
const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// What the kernel tells about a new connection.
#[derive(Clone, Copy, Debug)]
enum Conn {
    /// Unix socket: who is calling.
    Peer(Peer),
    /// TCP: from where; who is calling comes from a token.
    Client(ClientAddr),
}

/// A listener the server accepts connections from.
trait Accept {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    async fn next(&self) -> std::io::Result<(Self::Io, Conn)>;
}

impl Accept for UnixListener {
    type Io = UnixStream;
    async fn next(&self) -> std::io::Result<(UnixStream, Conn)> {
        let (stream, _) = self.accept().await?;
        let cred = stream.peer_cred()?;
        Ok((
            stream,
            Conn::Peer(Peer {
                uid: UserId(cred.uid()),
            }),
        ))
    }
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn next(&self) -> std::io::Result<(TcpStream, Conn)> {
        let (stream, addr): (TcpStream, SocketAddr) = self.accept().await?;
        Ok((stream, Conn::Client(ClientAddr(addr))))
    }
}

/// Serves `router` on the Unix socket until `stop` turns true.
pub async fn serve_unix(listener: UnixListener, router: Router, stop: watch::Receiver<bool>) {
    serve(listener, router, stop).await;
}

/// Serves `router` on loopback TCP until `stop` turns true.
pub async fn serve_tcp(listener: TcpListener, router: Router, stop: watch::Receiver<bool>) {
    serve(listener, router, stop).await;
}

async fn serve<L: Accept>(listener: L, router: Router, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.next() => {
                let (io, conn) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        // Out of file descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let router = router.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    match conn {
                        Conn::Peer(peer) => {
                            req.extensions_mut().insert(peer);
                        }
                        Conn::Client(client) => {
                            req.extensions_mut().insert(client);
                        }
                    }
                    router.clone().oneshot(req)
                });
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("{MAX_CONNECTIONS} connections open; refusing another");
                    continue;
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    // Without a timer hyper drops its header timeout: an
                    // idle connection would hold a descriptor for ever.
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(io), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended with an error: {e}");
                    }
                    drop(permit);
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; exiting anyway");
    }
}
