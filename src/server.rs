//! Serving the API: peer credentials read at accept on the Unix socket,
//! the client address on loopback TCP, HTTP/1.1 per connection, graceful
//! shutdown that finishes requests in flight.
//!
//! Every connection is counted against a budget before it is served
//! (rule 9, src/budget): on the socket against its peer's uid, on TCP in
//! the lobby of unauthenticated connections until a request on it shows a
//! valid token (then against that account, see `api::conn_budget`). A
//! connection past its budget gets one problem+json answer and is closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::accounts::UserId;
use crate::api::{AppState, ClientAddr, Peer, conn_budget};
use crate::budget::{Listener, Place, Quota, REFUSAL_WAIT, REFUSING_AT_ONCE, Ticket};

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
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
) {
    serve(listener, router, state, stop).await;
}

/// Serves `router` on loopback TCP until `stop` turns true.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
) {
    serve(listener, router, state, stop).await;
}

/// What every connection task of one listener shares.
struct Shared {
    router: Router,
    state: Arc<AppState>,
    refusing: Semaphore,
}

async fn serve<L: Accept>(
    listener: L,
    router: Router,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let shared = Arc::new(Shared {
        router,
        state,
        refusing: Semaphore::new(REFUSING_AT_ONCE),
    });
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
                let watcher = graceful.watcher();
                let shared = shared.clone();
                match conn {
                    // Deciding a peer's budget may ask the name service:
                    // never in the accept loop.
                    Conn::Peer(peer) => {
                        tokio::spawn(async move { serve_peer(io, peer, &shared, watcher).await });
                    }
                    // Into the lobby here, in accept order: a newcomer is
                    // never taken for older than a connection accepted
                    // before it, whatever order the tasks run in.
                    Conn::Client(client) => {
                        let limit = shared.state.config().limits.connections.unauthenticated;
                        let ticket = shared.state.budgets.lobby.enter(limit, Instant::now());
                        tokio::spawn(async move {
                            serve_client(io, client, ticket, &shared, watcher).await;
                        });
                    }
                }
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

/// A socket connection: counted against its peer's uid.
async fn serve_peer<I>(io: I, peer: Peer, shared: &Shared, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let st = &shared.state;
    let standing = st.standing(peer.uid, None).await;
    let limits = st.config().limits.connections;
    let quota = Quota::connection(&limits, st.budgets.ceiling, standing);
    let _slot = match st.budgets.unix.admit(peer.uid, quota) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (what, answer) = conn_budget::connection_refused(refusal, standing);
            st.budgets
                .reports
                .refused(Listener::Unix, what, Some(peer.uid), &answer.error.detail);
            return refuse(io, shared, answer).await;
        }
    };
    let router = shared.router.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer);
        router.clone().oneshot(req)
    });
    run(io, service, limits.idle_timeout, watcher).await;
}

/// A TCP connection that entered the lobby with `ticket`: there until a
/// request authenticates it.
async fn serve_client<I>(
    io: I,
    client: ClientAddr,
    ticket: Ticket,
    shared: &Shared,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let st = &shared.state;
    let limits = st.config().limits.connections;
    if ticket.pushed_out {
        st.budgets.reports.pushed_out();
    }
    let eviction = ticket.eviction.clone();
    let place = Arc::new(Place::new(ticket));
    let router = shared.router.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(client);
        req.extensions_mut().insert(place.clone());
        let place = place.clone();
        let router = router.clone();
        async move {
            place.request_started(Instant::now());
            let resp = router.oneshot(req).await;
            place.request_ended(Instant::now());
            resp
        }
    });
    tokio::select! {
        () = run(io, service, limits.idle_timeout, watcher) => {}
        // Pushed out of a full lobby: dropping the connection closes it.
        () = eviction.notified() => {}
    }
}

/// Serves HTTP/1.1 on `io` until the client or the idle timeout ends it.
async fn run<I, S, F>(io: I, service: S, idle: Duration, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future = F,
        > + Send
        + 'static,
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        // Without a timer hyper drops its header timeout.
        .timer(TokioTimer::new())
        // hyper (1.x) restarts this timer each time a keep-alive
        // connection goes idle after an answer, so it bounds the time
        // between requests as well as the time to send headers: an idle
        // connection is closed after `idle`, never held for ever. A
        // streaming answer (/v1/events) is not idle.
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// Answers the request on a refused connection with `answer` and closes
/// it; closes it at once when many refusals are being answered already.
async fn refuse<I>(io: I, shared: &Shared, answer: conn_budget::Busy)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(_permit) = shared.refusing.try_acquire() else {
        return;
    };
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
        let resp = answer.response();
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_WAIT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    // Bounded even if the client reads the answer slowly.
    let _ = tokio::time::timeout(REFUSAL_WAIT * 2, conn).await;
}
