//! `ews coordinator`: burn-collective's global orchestrator, which the nodes of a
//! data-parallel run over several machines (`ews train --nodes M`) meet through.

use anyhow::{Context, Result};

/// Serves the nodes on `port` (all interfaces) until Ctrl-C or SIGTERM.
pub fn serve(port: u16) -> Result<()> {
    // The orchestrator only logs a failure to listen: try the port first.
    std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!("ews coordinator: cannot listen on port {port}; choose another with --port")
    })?;
    eprintln!(
        "ews coordinator: listening on port {port}. On every machine run `ews train --nodes M --node-rank R --coordinator THIS_HOST:{port} --node-address THAT_HOST:PORT` with the same settings; Ctrl-C stops the coordinator (start a fresh one for every run)."
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("ews coordinator: cannot start its runtime")?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}
