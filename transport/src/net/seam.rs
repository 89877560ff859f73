//! The only module that names glommio: sockets, timers, task spawning and a wake-up signal.
//!
//! Everything else in `net` is written against `futures_lite`'s `AsyncRead`/`AsyncWrite` and
//! these few functions, so replacing glommio (compio, monoio) means rewriting this file only.
//! All of it must run inside a glommio executor thread; the values are `!Send` and belong to
//! the core that made them.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::TransportError;

/// A connected TCP stream owned by this core.
pub type TcpStream = glommio::net::TcpStream;

/// A listening TCP socket owned by this core.
pub type TcpListener = glommio::net::TcpListener;

fn io_error(
    op: &'static str,
    addr: impl ToString,
    err: impl Into<std::io::Error>,
) -> TransportError {
    TransportError::Io {
        op,
        addr: addr.to_string(),
        source: err.into(),
    }
}

/// Binds a listener on `addr` (port 0 picks a free port).
///
/// # Errors
/// [`TransportError::Io`] naming the address, e.g. when the port is in use.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // Not `TcpListener::bind`: glommio sets SO_REUSEPORT, which would let a second node bind
    // the same port and silently take half its connections. A plain std bind fails with
    // "address in use" instead.
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|err| io_error("bind", addr, err))?;
    // SAFETY: the descriptor comes from a listener we own and hand over whole.
    Ok(unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) })
}

/// The address a listener is bound to.
///
/// # Errors
/// [`TransportError::Io`] if the socket cannot tell.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr, TransportError> {
    listener
        .local_addr()
        .map_err(|err| io_error("local_addr", "listener", err))
}

/// Waits for the next inbound connection and its peer address.
pub(crate) async fn accept(listener: &TcpListener) -> Result<(TcpStream, String), TransportError> {
    let stream = listener
        .accept()
        .await
        .map_err(|err| io_error("accept", "listener", err))?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    Ok((stream, peer))
}

/// Connects to `addr` within `timeout`.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, TransportError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|err| io_error("connect", addr, err))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sleeps for `duration` on this core's timer.
pub(crate) async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future`, failing with [`TransportError::Timeout`] after `after`.
pub(crate) async fn with_timeout<T>(
    after: Duration,
    op: &'static str,
    addr: &str,
    future: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let deadline = async {
        sleep(after).await;
        Err(TransportError::Timeout {
            op,
            addr: addr.to_owned(),
            after,
        })
    };
    futures_lite::future::or(future, deadline).await
}

/// Spawns a task on this core, detached: it runs until it returns.
pub(crate) fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Creates a wake-up signal: rings coalesce (at most one is pending), and the waiting side
/// learns when every ringing side is gone.
pub(crate) fn doorbell() -> (DoorbellRing, DoorbellWait) {
    let (sender, receiver) = local_channel::new_bounded(1);
    (DoorbellRing(sender), DoorbellWait(receiver))
}

/// The ringing side of [`doorbell`].
pub(crate) struct DoorbellRing(LocalSender<()>);

impl DoorbellRing {
    /// Wakes the waiter; a ring already pending absorbs this one.
    pub(crate) fn ring(&self) {
        let _ = self.0.try_send(());
    }
}

/// The waiting side of [`doorbell`].
pub(crate) struct DoorbellWait(LocalReceiver<()>);

impl DoorbellWait {
    /// Waits for a ring; `false` when the ringing side was dropped.
    pub(crate) async fn wait(&self) -> bool {
        self.0.recv().await.is_some()
    }
}
