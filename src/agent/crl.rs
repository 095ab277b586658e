//! `--crl FILE`: the certificate revocation list the mesh checks peers against, read at start
//! and again whenever the file changes (an admin copies a new `lockmesh certs revoke` output
//! over it). A list that does not read keeps the previous one in force, and says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::mesh::endpoint::{Mesh, MeshError};
use crate::mesh::tls::{self, Identity};

/// How often the file's modification time is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Loads the list into the mesh now, then follows the file's changes.
pub fn start(path: PathBuf, identity: Identity, mesh: Arc<Mesh>) -> Result<(), MeshError> {
    let crls = tls::load_crls(&path)?;
    mesh.set_crls(&identity, &crls)?;
    tracing::info!(file = %path.display(), lists = crls.len(), "checking peers against the certificate revocation list");
    let mut seen = modified(&path);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match tls::load_crls(&path).map_err(MeshError::from).and_then(|crls| mesh.set_crls(&identity, &crls).map(|()| crls.len())) {
                Ok(lists) => tracing::info!(file = %path.display(), lists, "certificate revocation list re-read: revoked peers are refused and their connections closed"),
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot use the changed certificate revocation list; the previous one stays in force"),
            }
        }
    });
    Ok(())
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
