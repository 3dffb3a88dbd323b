//! The admin API's cluster endpoints: `POST /admin/cluster/invite` writes an invitation
//! (founding the cluster on first use) and `POST /admin/cluster/remove` removes a member; the
//! running swarm learns of both at once. Authenticated with the admin bearer token.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::admin::authorize;
use super::error::ApiError;
use super::handlers::json_response;
use super::state::AppState;
use crate::replication::invitation::DEFAULT_DAYS;
use crate::replication::{Envelope, Removed, parse_peer_id};

/// Query of `POST /admin/cluster/invite`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InviteQuery {
    /// Days the invitation and its credential stay valid (default 365).
    days: Option<u64>,
    /// Comma-separated extra multiaddrs (with `/p2p/`) the new member dials first.
    bootstrap: Option<String>,
}

/// Answer of `POST /admin/cluster/invite`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteAnswer {
    /// The new member's peer ID (what `cluster remove` takes to revoke the invitation).
    pub peer_id: String,
    /// Cluster ID.
    pub cluster: String,
    /// Whether this invitation founded the cluster.
    pub founded: bool,
    /// Expiry (RFC 3339).
    pub expires: String,
    /// Addresses the new member dials first.
    pub bootstrap: Vec<String>,
    /// The invitation file's content (secret: it carries the cluster key).
    pub invitation: Envelope,
}

/// `POST /admin/cluster/invite[?days=N][&bootstrap=ADDR,…]`.
pub async fn invite(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<InviteQuery>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let node = st.node();
    let mut bootstrap: Vec<String> = q
        .bootstrap
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(r) = node.replication() {
        bootstrap.extend(r.bootstrap_addrs().await?);
    }
    let cluster = std::sync::Arc::clone(node.cluster());
    let factory_url = node.factory_url().to_string();
    let days = q.days.unwrap_or(DEFAULT_DAYS);
    let secure_boot = crate::node::secure_boot_paths(node.config());
    let issued = tokio::task::spawn_blocking(move || {
        let pems = secure_boot
            .as_ref()
            .map(crate::replication::invitation::SecureBootPems::read)
            .transpose()?;
        cluster.invite(
            &factory_url,
            days,
            bootstrap,
            pems,
            crate::clock::now_secs(),
        )
    })
    .await
    .map_err(|e| ApiError::caused("writing the invitation", e))??;
    let invitation: Envelope = serde_json::from_slice(&issued.bytes).map_err(ApiError::json)?;
    json_response(&InviteAnswer {
        peer_id: issued.peer_id.to_string(),
        cluster: issued.cluster,
        founded: issued.founded,
        expires: crate::clock::rfc3339_utc(issued.expires),
        bootstrap: issued.bootstrap,
        invitation,
    })
}

/// Query of `POST /admin/cluster/remove`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveQuery {
    /// The member to remove.
    peer_id: String,
}

/// Answer of `POST /admin/cluster/remove`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveAnswer {
    /// The removed peer.
    pub peer_id: String,
    /// Whether it was removed by this request (false: it had been removed before).
    pub removed_now: bool,
    /// When it was removed (RFC 3339).
    pub removed_at: String,
}

/// `POST /admin/cluster/remove?peerId=ID`: revokes a member; the revocation reaches the
/// members by gossip and by every later hello.
pub async fn remove(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let peer = parse_peer_id(&q.peer_id)?;
    let cluster = std::sync::Arc::clone(st.node().cluster());
    let now = crate::clock::now_secs();
    let removed = tokio::task::spawn_blocking(move || cluster.remove(&peer, now))
        .await
        .map_err(|e| ApiError::caused("removing the member", e))??;
    let (removed_now, at) = match removed {
        Removed::Now(_) => (true, now),
        Removed::Already(at) => (false, at),
    };
    json_response(&RemoveAnswer {
        peer_id: peer.to_string(),
        removed_now,
        removed_at: crate::clock::rfc3339_utc(at),
    })
}
