//! The disk thread: it takes the outbox's write batches in order, commits all waiting ones in
//! one synced transaction (group commit), then hands them back to the runtime, which tells the
//! outbox they are durable and sends what it releases. The runtime stops taking new input
//! while too many batches wait in its outbox (backpressure), so neither queue grows without
//! bound when the disk is slow.

use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::runtime::Input;
use crate::core::ToDisk;
use crate::store::Store;

pub fn start(store: Store, back: mpsc::UnboundedSender<Input>) -> std_mpsc::Sender<ToDisk> {
    let (tx, rx) = std_mpsc::channel::<ToDisk>();
    std::thread::Builder::new()
        .name("lockmesh-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                if let Err(e) = store.commit(group.iter().flat_map(|b| b.writes.iter())) {
                    // Continuing could answer without the state the answer depends on.
                    tracing::error!(error = %e, "cannot persist voter state; stopping");
                    std::process::exit(1);
                }
                if back.send(Input::Committed(group)).is_err() {
                    return;
                }
            }
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot start the disk thread");
            std::process::exit(1)
        });
    tx
}
