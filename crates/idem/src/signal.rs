//! The signals the long-running subcommands (`gateway`, `chaos`) obey.

/// Waits for SIGTERM or Ctrl-C (SIGINT). Each SIGHUP meanwhile calls
/// `on_hangup`, which says whether to keep waiting (`true`) or to shut
/// down as for SIGTERM. Where the handlers cannot be installed (not Unix,
/// or the system refused), Ctrl-C alone ends the wait.
pub(crate) async fn shutdown_requested(mut on_hangup: impl FnMut() -> bool) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hangup.recv() => if !on_hangup() {
                    return;
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &mut on_hangup;
        let _ = tokio::signal::ctrl_c().await;
    }
}
