//! A node's place on the bus: what it answers for other nodes (token
//! checks, session hand-overs, reaps), its liveness lease and its hello.

use super::ServerError;
use roomlet_bus::Bus;
use roomlet_bus::directory::NodeInfo;
use roomlet_gateway::Gateway;
use roomlet_runtime::Function;
use std::sync::Arc;
use std::time::Duration;

/// Puts the node on the bus: answers token checks (auth), session moves
/// (relay), takes its liveness lease and says hello. The lease's renewal
/// task.
pub(super) async fn join(
    bus: &Arc<Bus>,
    gateway: &Arc<Gateway>,
    functions: &[Function],
    info: &NodeInfo,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    if functions.contains(&Function::Auth) {
        let g = gateway.clone();
        roomlet_bus::auth::serve(bus.clone(), Arc::new(move || g.auth())).await?;
    }
    if functions.contains(&Function::Relay) {
        // Sessions are recorded where any gateway can take them over.
        gateway.set_journal(Arc::new(bus.sessions.clone()));
        let g = gateway.clone();
        bus.on_hand_over(move |key, to| {
            let g = g.clone();
            async move { g.hand_over(key, &to).await }
        })
        .await?;
        let g = gateway.clone();
        bus.on_session_gone(move |token| {
            let g = g.clone();
            async move { g.end_resumed_elsewhere(&token).await }
        })
        .await?;
        let g = gateway.clone();
        bus.on_reap(move |r| {
            let g = g.clone();
            async move { g.reap_parked(&r.room, &r.identity, &r.peer).await }
        })
        .await?;
    }
    let renewal = tokio::spawn(bus.clone().keep_alive(info.clone()));
    let within = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + within;
    while !bus.lease_valid() {
        if tokio::time::Instant::now() > deadline {
            renewal.abort();
            return Err(ServerError::Lease(within));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Before serving: what this name held until now is gone.
    bus.hello().await;
    Ok(renewal)
}
