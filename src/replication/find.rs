//! Find before build, the decision side: on a local miss the asset pipeline asks
//! [`ClusterPeers::find`], which fetches the model from a member that has it (provider records,
//! or a finished lease), waits while a member builds it (its lease renewed by gossip; silence
//! ends the wait), claims the build otherwise, and answers whether this node must build. A
//! fetched model's signed record is verified against the cluster key, its bytes against the
//! record's BLAKE3 (as they arrive, see `transfer`), before either is stored.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::event_loop::is_key;
use super::leases::{CLAIM_SETTLE, LeaseState};
use super::protocol::{BlobId, ModelReply};
use super::test_settings::{self, BUILD_DELAY_ENV};
use super::transfer::{MAX_BLOB, fetch_blob};
use super::{Command, Replication, ReplicationError};
use crate::assets::{AssetRecord, Peers, RecordStore};
use crate::causes::Causes;
use crate::store::{BlobStore, BoxFuture};

/// How often a waiting node looks at a lease.
const POLL: Duration = Duration::from_millis(200);
/// How long a claim waits for competing claims before the build starts: as long as a lower
/// peer ID's claim may still take the lease ([`CLAIM_SETTLE`]), so a node never yields a lease
/// after its build began.
const CLAIM_WINDOW: Duration = CLAIM_SETTLE;
/// Longest wait for a member's build (a renewed lease); the build timeout bounds builds too.
const MAX_WAIT: Duration = Duration::from_secs(1800);
/// Members asked for a model before building.
const MAX_SOURCES: usize = 8;
/// Longest delay [`BUILD_DELAY_ENV`] may ask for, in milliseconds.
const MAX_BUILD_DELAY_MS: u64 = 60_000;

/// The delay [`BUILD_DELAY_ENV`] asks for (bounded), if set and valid.
fn build_delay() -> Option<Duration> {
    test_settings::read(
        BUILD_DELAY_ENV,
        MAX_BUILD_DELAY_MS,
        "builds under a cluster lease start late (milliseconds)",
    )
    .map(Duration::from_millis)
}

/// The cluster as the asset pipeline's [`Peers`].
pub struct ClusterPeers {
    rep: Replication,
    blobs: BlobStore,
    records: RecordStore,
    verifier: crate::assets::RecordVerifier,
    /// Tests only: how long to wait between taking a lease and building ([`BUILD_DELAY_ENV`]).
    build_delay: Option<Duration>,
}

impl ClusterPeers {
    /// Over the running swarm `rep`, storing into `blobs` and `records`, verifying records
    /// with `verifier` (the cluster key).
    pub fn new(
        rep: Replication,
        blobs: BlobStore,
        records: RecordStore,
        verifier: crate::assets::RecordVerifier,
    ) -> Self {
        Self {
            rep,
            blobs,
            records,
            verifier,
            build_delay: build_delay(),
        }
    }

    /// Fetches the model of `key` from `peer`: its record (verified against the cluster key,
    /// naming `key`), then its blob (verified chunk by chunk against its BLAKE3, striped over
    /// `peer` and the other members that hold it); stores both.
    pub(super) async fn fetch(&self, peer: PeerId, key: &str) -> Result<(), ReplicationError> {
        let raw = match self.rep.model_record(peer, key).await? {
            ModelReply::Record { record } => record.into_bytes(),
            ModelReply::Missing => {
                return Err(ReplicationError::NotHeld {
                    peer: peer.to_string(),
                    blob: format!("model {key}"),
                });
            }
            ModelReply::Refused => {
                return Err(ReplicationError::PeerFailed {
                    peer: peer.to_string(),
                    why: "it refused the request".into(),
                });
            }
        };
        let corrupt = |why: String| ReplicationError::Corrupt {
            peer: peer.to_string(),
            blob: format!("the record of model {key}"),
            why,
        };
        let record =
            AssetRecord::open(&raw, &self.verifier).map_err(|e| corrupt(Causes(&e).to_string()))?;
        if record.key != key {
            return Err(corrupt(format!("it is the record of {}", record.key)));
        }
        if record.size > MAX_BLOB || !crate::store::is_blob_name(&record.blake3) {
            return Err(corrupt("it names an invalid blob".into()));
        }
        if !self.blobs.contains(&record.blake3) {
            fetch_blob(
                &self.rep,
                &self.rep.sources(peer).await,
                &self.blobs,
                &BlobId::Blake3(record.blake3.clone()),
                (Some(record.size), MAX_BLOB),
                &format!("model {key}"),
            )
            .await?;
            self.rep.metrics.bytes_received.increment(record.size);
        }
        self.records.put_raw(key, &raw)?;
        self.records.flush().await?;
        self.rep.tell(Command::Provide(key.to_string()));
        tracing::info!(key = %key, peer_id = %peer, size = record.size, "model fetched from a member");
        Ok(())
    }

    /// [`ClusterPeers::fetch`], logged and counted; whether it worked.
    async fn try_fetch(&self, peer: PeerId, key: &str) -> bool {
        match self.fetch(peer, key).await {
            Ok(()) => true,
            Err(e) => {
                if matches!(e, ReplicationError::Corrupt { .. }) {
                    self.rep.metrics.verification_failures.increment(1);
                }
                tracing::warn!(key = %key, peer_id = %peer, error = %Causes(&e), "a model was not fetched from a member");
                false
            }
        }
    }

    /// Whether the model of `key` was fetched from a member; `false`: build it here. In order:
    /// a member's finished build, provider records, a member's build in progress (awaited),
    /// else a claim.
    async fn decide(&self, key: &str) -> Result<bool, ReplicationError> {
        let started = Instant::now();
        // Rounds of provider records asked: one before any wait, a second once a wait ended
        // without the model (the builder went silent or away, or is busy: the members it
        // pushed copies to may have it).
        let mut provider_rounds = 0u8;
        let mut claimed = false;
        let mut waited = false;
        // A member whose finished build could not be fetched (evicted since, or busy).
        let mut lost = None;
        loop {
            let view = self.rep.lease(key).await?;
            if view.members == 0 {
                return Ok(false);
            }
            match view.state {
                LeaseState::Built { by } if by != self.rep.peer_id() && lost != Some(by) => {
                    if self.try_fetch(by, key).await {
                        return Ok(true);
                    }
                    lost = Some(by);
                }
                // Provider records first: a member may hold the model already.
                LeaseState::Held {
                    mine: false,
                    holder,
                } if provider_rounds > 0 => {
                    if started.elapsed() > MAX_WAIT {
                        tracing::warn!(key = %key, peer_id = %holder, "waited too long for a member's build; building");
                        return Ok(false);
                    }
                    if !waited {
                        waited = true;
                        self.rep.metrics.lease_waits.increment(1);
                        tracing::info!(key = %key, peer_id = %holder, "a member is building this model; waiting for it");
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                LeaseState::Held { mine: true, .. } if claimed => {
                    tracing::info!(key = %key, "no member has this model or builds it: building it here under a lease");
                    if let Some(d) = self.build_delay {
                        tokio::time::sleep(d).await;
                    }
                    return Ok(false);
                }
                _ => {}
            }
            if provider_rounds < 1 + u8::from(waited) {
                provider_rounds += 1;
                let providers = self.rep.providers(key).await?;
                for p in providers.into_iter().take(MAX_SOURCES) {
                    if self.try_fetch(p, key).await {
                        return Ok(true);
                    }
                }
                continue;
            }
            if !claimed {
                claimed = true;
                self.rep.claim(key, lost).await?;
                tokio::time::sleep(CLAIM_WINDOW).await;
                continue;
            }
            // Claimed, lost to a member whose build then failed or went silent: build here.
            return Ok(false);
        }
    }
}

impl Peers for ClusterPeers {
    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            if !is_key(key) {
                return false;
            }
            match self.decide(key).await {
                Ok(found) => {
                    if found {
                        self.rep.metrics.builds_avoided.increment(1);
                    }
                    found
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %Causes(&e), "the cluster could not be asked; building");
                    false
                }
            }
        })
    }

    fn built(&self, key: &str, ok: bool) {
        self.rep.tell(Command::Built {
            key: key.to_string(),
            ok,
        });
    }

    fn designation(&self) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
        Box::new(self.rep.placement.designated())
    }
}
