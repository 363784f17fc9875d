//! `coldtrail ingest http://ADDR`: `ingest::http`'s endpoint until Ctrl-C or SIGTERM, and the shutdown
//! signal every long-running command waits for.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use store::Store;

/// Serves until Ctrl-C or SIGTERM, then stores what is pending and flushes.
pub async fn serve(store: Arc<Store>, address: &str, token: String) -> anyhow::Result<()> {
    let address: SocketAddr = address.parse().with_context(|| format!("{address} is not an address:port"))?;
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    outln!("listening on http://{0}/ingest (OTLP/HTTP at http://{0}/v1/traces and /v1/logs)", listener.local_addr()?);
    ingest::http::serve(listener, ingest::StoreSink::new(store.clone()), token, shutdown_signal()).await?;
    store.flush_all().await?;
    Ok(())
}

/// Ctrl-C, SIGTERM, or (for a command that asked for it) stdout closed by its reader. The handlers are
/// installed when this is called, not when the future is first polled: a signal in between is not fatal.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = received(interrupt.as_mut()) => {}
            _ = received(terminate.as_mut()) => {}
            _ = crate::stdout_closed() => {}
        }
    }
}

async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
