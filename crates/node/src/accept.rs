//! The accept loop shared by the HTTP and peer listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::shutdown::Shutdown;

/// Accepts connections until shutdown, running `serve` for each in its own task, and returns the
/// tasks still running (dropping the set aborts them).
///
/// At most `limit` connections are served at once; more are closed at accept, so a flood costs file
/// descriptors only briefly.
pub(crate) async fn accept_until_shutdown<F, Fut>(
    listener: &TcpListener,
    what: &'static str,
    limit: usize,
    shutdown: &mut Shutdown,
    mut serve: F,
) -> JoinSet<Fut::Output>
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.wait() => return connections,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) if connections.len() < limit => {
                    connections.spawn(serve(stream, addr).in_current_span());
                }
                Ok((_, addr)) => tracing::warn!(%addr, limit, "too many {what} connections; closing"),
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning on accept.
                    tracing::warn!(error = %e, "accepting a {what} connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
