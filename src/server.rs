//! Serving the API on a Unix socket: peer credentials read at accept,
//! HTTP/1.1 per connection, graceful shutdown that finishes requests in
//! flight.

use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::accounts::UserId;
use crate::api::Peer;

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true, then stops
/// accepting and waits for connections in flight to finish their requests.
pub async fn serve_unix(listener: UnixListener, router: Router, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("accept on the Unix socket failed: {e}");
                        // Out of file descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let peer = match stream.peer_cred() {
                    Ok(cred) => Peer { uid: UserId(cred.uid()) },
                    Err(e) => {
                        tracing::warn!("could not read peer credentials, dropping connection: {e}");
                        continue;
                    }
                };
                let router = router.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(peer);
                    router.clone().oneshot(req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended with an error: {e}");
                    }
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
