//! Releases replicate to every member: an import is announced by gossip (its version), and so
//! is every copy a member completes, and the record is fetched from the announcer; when two
//! members connect, and with the periodic round, each lists the other's versions and fetches
//! the records it lacks. A record travels signed
//! with the cluster key and is verified (signature, kind, cluster, version, safe names)
//! before anything is fetched for it; its blobs then come from the same member by the blob
//! protocol, each verified by its hash before it is committed (see `transfer`), and the record
//! is stored last. This node answers blob chunk requests of members from its store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use tokio::sync::mpsc;

use super::EventLoop;
use super::schematics::Via;
use crate::catalog::{ReleaseStore, Revision, Version};
use crate::causes::Causes;
use crate::replication::Replication;
use crate::replication::membership::Envelope;
use crate::replication::protocol::{
    Gossip, MAX_RELEASE_RECORD, MAX_RELEASES, RELEASE_KIND, ReleaseReply, ReleaseRequest,
    SignedRelease,
};
use crate::store::BlobStore;
use crate::trust::SigningKey;

/// Releases being fetched at once.
const MAX_FETCHING: usize = 4;

/// What the release side needs from the node.
#[derive(Clone)]
pub struct ReleaseParts {
    /// Imported releases.
    pub releases: ReleaseStore,
    /// The blob store.
    pub blobs: BlobStore,
    /// Keeps the garbage collector off orphan blobs while a release is fetched.
    pub imports: crate::node::ImportCount,
}

/// Work done off the event loop, reported back to it.
pub(crate) enum Job {
    /// An answer for a member, read from the store.
    ServeRelease {
        channel: ResponseChannel<ReleaseReply>,
        reply: ReleaseReply,
    },
    /// A model's record for a member, read from the store.
    ServeModel {
        channel: ResponseChannel<crate::replication::protocol::ModelReply>,
        reply: crate::replication::protocol::ModelReply,
    },
    /// Models held from before this start, to advertise.
    Provide(Vec<String>),
    /// Members that became designated for models held here, to ask to hold a copy.
    Replace(Vec<(PeerId, String)>),
    /// The store could not be read to re-place copies from these members.
    ReplaceAgain(Vec<PeerId>),
    /// What this node holds, counted.
    Holdings(crate::replication::protocol::Holdings),
    /// Versions a member holds that this node does not.
    Missing {
        peer: PeerId,
        versions: Vec<String>,
        via: Via,
    },
    /// A release record from a member was not taken: it failed its check, or is not newer
    /// than the record held.
    Dropped { version: String },
    /// A release fetch ended.
    Fetched {
        version: String,
        revision: Option<Revision>,
        peer: PeerId,
        via: Via,
        result: Result<
            crate::replication::release_fetch::Fetched,
            crate::replication::ReplicationError,
        >,
    },
}

/// The release side of the event loop's state.
pub(crate) struct ReleaseSync {
    pub(super) parts: ReleaseParts,
    key: Arc<SigningKey>,
    pub(super) handle: Replication,
    jobs: mpsc::UnboundedSender<Job>,
    /// Versions being fetched.
    fetching: HashSet<String>,
    /// Record requests in flight: which version, and what made this node ask.
    gets: HashMap<OutboundRequestId, (String, Via)>,
}

impl ReleaseSync {
    /// The state over `parts`; records are signed with `key`; finished work goes to `jobs`.
    pub(crate) fn new(
        parts: ReleaseParts,
        key: Arc<SigningKey>,
        handle: Replication,
        jobs: mpsc::UnboundedSender<Job>,
    ) -> Self {
        Self {
            parts,
            key,
            handle,
            jobs,
            fetching: HashSet::new(),
            gets: HashMap::new(),
        }
    }
}

impl ReleaseSync {
    /// The asset records of this node.
    pub(crate) fn records(&self) -> crate::assets::RecordStore {
        crate::assets::RecordStore::new(Arc::clone(self.parts.blobs.meta()))
    }

    /// Where work done off the loop reports.
    pub(crate) fn jobs(&self) -> mpsc::UnboundedSender<Job> {
        self.jobs.clone()
    }
}

/// Whether this node wants a member's record of release `version` of revision `theirs`: it
/// holds no record of that version, or an older revision, or one marked damaged (a blob of it
/// failed its check and was set aside; a member's copy brings it back and clears the mark).
fn wants(
    releases: &ReleaseStore,
    version: &str,
    theirs: Option<&Revision>,
    damaged: &BTreeMap<String, crate::catalog::Damage>,
) -> bool {
    if damaged.contains_key(version) {
        return true;
    }
    match releases.get(version) {
        Ok(None) => true,
        Ok(Some(held)) => held.revision.as_ref() < theirs,
        Err(_) => false,
    }
}

/// The damage mark of `version` alone, as [`wants`] takes marks (one lookup, not a scan of
/// every mark).
fn damage_of(releases: &ReleaseStore, version: &str) -> BTreeMap<String, crate::catalog::Damage> {
    match releases.damage(version) {
        Ok(Some(d)) => BTreeMap::from([(version.to_string(), d)]),
        _ => BTreeMap::new(),
    }
}

/// The versions of complete, undamaged releases held (the newest [`MAX_RELEASES`]), and the
/// revision of each record that has one.
fn held_versions(releases: &ReleaseStore) -> (Vec<String>, BTreeMap<String, Revision>) {
    let damaged = releases.damaged().unwrap_or_default();
    match releases.list() {
        // Oldest first: the newest are kept when there are too many.
        Ok(list) => {
            let held: Vec<_> = list
                .iter()
                .rev()
                .filter(|r| !damaged.contains_key(&r.version))
                .take(MAX_RELEASES)
                .collect();
            let revisions = held
                .iter()
                .filter_map(|r| Some((r.version.clone(), r.revision.clone()?)))
                .collect();
            (held.iter().map(|r| r.version.clone()).collect(), revisions)
        }
        Err(e) => {
            tracing::warn!(error = %Causes(&e), "releases not listed for a member");
            Default::default()
        }
    }
}

/// Verifies a record a member sent: signed by the cluster key, of the right kind and cluster,
/// the version asked for, and naming only safe paths.
pub(crate) fn open_record(
    key: &crate::replication::membership::ClusterKey,
    env: &Envelope,
    version: &str,
) -> Result<(crate::catalog::Release, ReleaseNames), String> {
    let size = env.payload.len() + env.signature.len();
    if size > MAX_RELEASE_RECORD * 4 / 3 + 1024 {
        return Err(format!("a record of {size} bytes is over the limit"));
    }
    let signed: SignedRelease = env
        .open_within("release record", key.verifying_key(), usize::MAX)
        .map_err(|e| Causes(&e).to_string())?;
    if signed.kind != RELEASE_KIND {
        return Err(format!("the document is a {:?}", signed.kind));
    }
    if signed.cluster != key.id() {
        return Err(format!("it belongs to cluster {}", signed.cluster));
    }
    if signed.release.version != version {
        return Err(format!(
            "it is release {:?}, not {version:?}",
            signed.release.version
        ));
    }
    signed
        .release
        .check_names()
        .map_err(|e| Causes(&e).to_string())?;
    if let Some(r) = &signed.release.revision
        && !r.is_well_formed()
    {
        return Err(format!("its revision {r:?} is not one a member writes"));
    }
    if signed.blobs.len() > 100_000
        || signed
            .blobs
            .iter()
            .any(|(k, v)| !crate::store::is_blob_name(k) || !crate::store::is_blob_name(v))
    {
        return Err("its blob names are not hashes".into());
    }
    Ok((signed.release, signed.blobs))
}

/// A release's image blobs: BLAKE3 by SHA-256.
pub(crate) type ReleaseNames = std::collections::BTreeMap<String, String>;

impl EventLoop {
    /// Asks `peer` which releases it holds (a member just connected, or the periodic round).
    pub(super) fn sync_releases_with(&mut self, peer: PeerId) {
        self.swarm
            .behaviour_mut()
            .releases
            .send_request(&peer, ReleaseRequest::List);
    }

    /// Announces release `version` of record revision `revision`, now held here: imported, or
    /// replicated from a member (so a member that asked one lacking it, or missed the import's
    /// announcement, fetches it from here instead of waiting for the periodic round).
    pub(super) fn announce_release(&mut self, version: String, revision: Option<Revision>) {
        let Some(topic) = self.sync.topic.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(&Gossip::Release { version, revision }) else {
            return;
        };
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::debug!(error = %e, "release not announced (no member connected)");
        }
    }

    /// `from` announced release `version` of record revision `revision` (imported by
    /// `source`): fetch it if missing or older here.
    pub(super) fn release_announced(
        &mut self,
        from: PeerId,
        source: Option<PeerId>,
        version: String,
        revision: Option<Revision>,
    ) {
        // Well formed (checked before) and not being fetched: only then a look at the store.
        if self.rel.fetching.contains(&version) {
            return;
        }
        let ask = source
            .filter(|s| self.connected_members().contains(s))
            .unwrap_or(from);
        let releases = self.rel.parts.releases.clone();
        let jobs = self.rel.jobs.clone();
        tokio::task::spawn_blocking(move || {
            if wants(
                &releases,
                &version,
                revision.as_ref(),
                &damage_of(&releases, &version),
            ) {
                let _ = jobs.send(Job::Missing {
                    peer: ask,
                    versions: vec![version],
                    via: Via::Announcement,
                });
            }
        });
    }

    /// Sends a record request for each of `versions` not being fetched already.
    fn get_releases(&mut self, peer: PeerId, versions: Vec<String>, via: Via) {
        for version in versions {
            if Version::parse_strict(&version).is_none()
                || self.rel.fetching.contains(&version)
                || self.rel.fetching.len() >= MAX_FETCHING
            {
                continue;
            }
            let id = self.swarm.behaviour_mut().releases.send_request(
                &peer,
                ReleaseRequest::Get {
                    version: version.clone(),
                },
            );
            self.rel.fetching.insert(version.clone());
            self.rel.gets.insert(id, (version, via));
        }
    }

    pub(super) fn on_releases_event(
        &mut self,
        event: request_response::Event<ReleaseRequest, ReleaseReply>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_release_request(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let asked = self.rel.gets.remove(&request_id);
                self.on_release_reply(peer, response, asked);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((v, _)) = self.rel.gets.remove(&request_id) {
                    self.rel.fetching.remove(&v);
                }
                tracing::debug!(peer_id = %peer, error = %error, "release request failed");
            }
            _ => {}
        }
    }

    fn on_release_request(
        &mut self,
        peer: PeerId,
        request: ReleaseRequest,
        channel: ResponseChannel<ReleaseReply>,
    ) {
        if !self.is_member(&peer) {
            let _ = self.swarm.behaviour_mut().releases.send_response(
                channel,
                ReleaseReply::Refused {
                    reason: "not a member".into(),
                },
            );
            return;
        }
        let Some(place) = self.answer_place(peer, super::Answer::Release) else {
            let _ = self.swarm.behaviour_mut().releases.send_response(
                channel,
                ReleaseReply::Refused {
                    reason: super::BUSY.into(),
                },
            );
            return;
        };
        let releases = self.rel.parts.releases.clone();
        let blobs = self.rel.parts.blobs.clone();
        let key = Arc::clone(&self.rel.key);
        let jobs = self.rel.jobs.clone();
        tokio::task::spawn_blocking(move || {
            let reply = match request {
                ReleaseRequest::List => {
                    let (versions, revisions) = held_versions(&releases);
                    ReleaseReply::List {
                        versions,
                        revisions,
                    }
                }
                ReleaseRequest::Get { version } => {
                    let damaged = matches!(releases.damage(&version), Ok(Some(_)));
                    match releases.get(&version) {
                        Ok(Some(r)) if !damaged => {
                            let signed = SignedRelease {
                                kind: RELEASE_KIND.into(),
                                cluster: crate::replication::membership::cluster_id(
                                    &key.verifying_key(),
                                ),
                                release: (*r).clone(),
                                blobs: crate::replication::release_fetch::image_blob_names(
                                    &r, &blobs,
                                ),
                            };
                            match Envelope::seal(&signed, &key) {
                                Ok(record) => ReleaseReply::Record { record },
                                Err(e) => {
                                    tracing::warn!(error = %e, "a release record could not be signed");
                                    ReleaseReply::Missing
                                }
                            }
                        }
                        _ => ReleaseReply::Missing,
                    }
                }
            };
            drop(place);
            let _ = jobs.send(Job::ServeRelease { channel, reply });
        });
    }

    fn on_release_reply(
        &mut self,
        peer: PeerId,
        reply: ReleaseReply,
        asked: Option<(String, Via)>,
    ) {
        match reply {
            ReleaseReply::List {
                versions,
                revisions,
            } => {
                let releases = self.rel.parts.releases.clone();
                let jobs = self.rel.jobs.clone();
                tokio::task::spawn_blocking(move || {
                    let damaged = releases.damaged().unwrap_or_default();
                    let missing: Vec<String> = versions
                        .into_iter()
                        .take(MAX_RELEASES)
                        .filter(|v| Version::parse_strict(v).is_some())
                        .filter(|v| {
                            let theirs = revisions.get(v).filter(|r| r.is_well_formed());
                            wants(&releases, v, theirs, &damaged)
                        })
                        .collect();
                    if !missing.is_empty() {
                        let _ = jobs.send(Job::Missing {
                            peer,
                            versions: missing,
                            via: Via::AntiEntropy,
                        });
                    }
                });
            }
            ReleaseReply::Record { record } => {
                let Some((version, via)) = asked else { return };
                let Some(m) = self.membership.clone() else {
                    self.rel.fetching.remove(&version);
                    return;
                };
                let parts = self.rel.parts.clone();
                let handle = self.rel.handle.clone();
                let jobs = self.rel.jobs.clone();
                let metrics = self.metrics.clone();
                tokio::spawn(async move {
                    // Up to 16 MiB of JSON and a signature: checked off the event loop.
                    let v = version.clone();
                    let opened =
                        tokio::task::spawn_blocking(move || open_record(&m.key, &record, &v))
                            .await
                            .unwrap_or_else(|e| Err(format!("the check did not finish: {e}")));
                    let (release, names) = match opened {
                        Ok(r) => r,
                        Err(why) => {
                            tracing::warn!(peer_id = %peer, version = %version, reason = %why, "a release record from a member was rejected");
                            metrics.verification_failures.increment(1);
                            let _ = jobs.send(Job::Dropped { version });
                            return;
                        }
                    };
                    // A record asked for as newer may no longer be (an import here since).
                    let current = {
                        let (releases, v, theirs) = (
                            parts.releases.clone(),
                            version.clone(),
                            release.revision.clone(),
                        );
                        tokio::task::spawn_blocking(move || {
                            wants(&releases, &v, theirs.as_ref(), &damage_of(&releases, &v))
                        })
                        .await
                        .unwrap_or(false)
                    };
                    if !current {
                        tracing::debug!(peer_id = %peer, version = %version, "a member's release record is not newer than the one held");
                        let _ = jobs.send(Job::Dropped { version });
                        return;
                    }
                    let revision = release.revision.clone();
                    tracing::info!(peer_id = %peer, version = %version, "fetching a release from a member");
                    let _running = parts.imports.start();
                    let result = crate::replication::release_fetch::fetch_release(
                        &handle,
                        peer,
                        &release,
                        &names,
                        &parts.blobs,
                        &parts.releases,
                    )
                    .await;
                    let _ = jobs.send(Job::Fetched {
                        version,
                        revision,
                        peer,
                        via,
                        result,
                    });
                });
            }
            ReleaseReply::Missing | ReleaseReply::Refused { .. } => {
                if let Some((v, _)) = asked {
                    self.rel.fetching.remove(&v);
                }
            }
        }
    }

    /// Release work finished off the loop.
    pub(super) fn on_release_job(&mut self, job: Job) {
        match job {
            Job::ServeRelease { channel, reply } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .releases
                    .send_response(channel, reply);
            }
            Job::Holdings(h) => self.holdings_counted(h),
            Job::ServeModel { channel, reply } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .models
                    .send_response(channel, reply);
            }
            Job::Missing {
                peer,
                versions,
                via,
            } => self.get_releases(peer, versions, via),
            Job::Provide(keys) => {
                for key in keys {
                    self.provide(key);
                }
            }
            Job::Replace(asks) => {
                tracing::info!(
                    asks = asks.len(),
                    "the members changed: asking the members now designated for models held here to hold a copy"
                );
                self.replace_copies_asked(asks);
            }
            Job::ReplaceAgain(old) => self.replace_copies_again(old),
            Job::Dropped { version } => {
                self.rel.fetching.remove(&version);
            }
            Job::Fetched {
                version,
                revision,
                peer,
                via,
                result,
            } => {
                self.rel.fetching.remove(&version);
                match result {
                    Ok(f) => {
                        self.metrics.bytes_received.increment(f.bytes);
                        if f.stored {
                            tracing::info!(peer_id = %peer, version = %version, via = via.as_str(), blobs = f.blobs, bytes = f.bytes, "release replicated");
                            self.metrics.releases_received.increment(1);
                            self.announce_release(version, revision);
                        } else {
                            tracing::info!(peer_id = %peer, version = %version, "a member's record of this release was not stored: a newer one was imported here meanwhile");
                        }
                    }
                    Err(e) => {
                        if matches!(e, crate::replication::ReplicationError::Corrupt { .. }) {
                            self.metrics.verification_failures.increment(1);
                        }
                        tracing::warn!(peer_id = %peer, version = %version, error = %Causes(&e), "a release from a member was not stored");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::membership::ClusterKey;

    fn release(version: &str, grub_path: &str) -> crate::catalog::Release {
        let blob =
            serde_json::json!({"blake3": "b".repeat(64), "sha256": "a".repeat(64), "size": 1});
        serde_json::from_value(serde_json::json!({
            "version": version, "imported_at": "", "source": "test",
            "signatures": {"state": "skipped"}, "partial": false,
            "arches": {"amd64": {"imager": null, "installer_base": null,
                "assets": {"vmlinuz": blob}, "grub": {grub_path: blob}}},
            "extensions": [], "overlays": [],
        }))
        .unwrap()
    }

    fn sealed(key: &SigningKey, kind: &str, cluster: &str, r: crate::catalog::Release) -> Envelope {
        Envelope::seal(
            &SignedRelease {
                kind: kind.into(),
                cluster: cluster.into(),
                release: r,
                blobs: Default::default(),
            },
            key,
        )
        .unwrap()
    }

    #[test]
    fn only_a_record_signed_by_the_cluster_for_the_version_asked_is_accepted() {
        let ours = SigningKey::from_seed(&[1; 32]);
        let theirs = SigningKey::from_seed(&[2; 32]);
        let cluster = ClusterKey::new(ours.verifying_key());
        let id = cluster.id().to_string();
        let good = sealed(
            &ours,
            RELEASE_KIND,
            &id,
            release("v1.11.0", "i386-pc/a.mod"),
        );
        assert_eq!(
            open_record(&cluster, &good, "v1.11.0").unwrap().0.version,
            "v1.11.0"
        );
        // Asked for another version.
        assert!(open_record(&cluster, &good, "v1.12.0").is_err());
        // Signed by another key (even naming this cluster).
        let forged = sealed(&theirs, RELEASE_KIND, &id, release("v1.11.0", "a.mod"));
        let e = open_record(&cluster, &forged, "v1.11.0").unwrap_err();
        assert!(e.contains("not signed by the cluster key"), "{e}");
        // Another kind of document, another cluster, an unsafe path.
        let kind = sealed(
            &ours,
            "image-factory/member-credential/v1",
            &id,
            release("v1.11.0", "a"),
        );
        assert!(open_record(&cluster, &kind, "v1.11.0").is_err());
        let other = sealed(&ours, RELEASE_KIND, "ab", release("v1.11.0", "a"));
        assert!(open_record(&cluster, &other, "v1.11.0").is_err());
        let unsafe_path = sealed(&ours, RELEASE_KIND, &id, release("v1.11.0", "../../keys/x"));
        assert!(open_record(&cluster, &unsafe_path, "v1.11.0").is_err());
        // A revision no member writes (it would pin the version for ever).
        let mut pinned = release("v1.11.0", "a.mod");
        pinned.revision = Some(Revision {
            number: u64::MAX,
            tag: "a".repeat(32),
        });
        let e = open_record(
            &cluster,
            &sealed(&ours, RELEASE_KIND, &id, pinned),
            "v1.11.0",
        )
        .unwrap_err();
        assert!(e.contains("revision"), "{e}");
        // Bytes changed after signing.
        let mut tampered = good.clone();
        tampered.payload.insert(0, 'e');
        assert!(open_record(&cluster, &tampered, "v1.11.0").is_err());
    }

    #[tokio::test]
    async fn a_member_record_is_wanted_when_missing_older_or_damaged_here() {
        let (_dir, store) = ReleaseStore::temporary();
        let none = BTreeMap::new();
        let rev = |number, c: char| Revision {
            number,
            tag: c.to_string().repeat(32),
        };
        assert!(wants(&store, "v1.11.0", None, &none), "not held");
        // Held without a revision (written before revisions): any revision replaces it.
        store
            .put(&release("v1.11.0", "i386-pc/a.mod"))
            .await
            .unwrap();
        assert!(!wants(&store, "v1.11.0", None, &none));
        assert!(wants(&store, "v1.11.0", Some(&rev(1, '0')), &none));
        // Held at revision 2-b: only a higher one is wanted.
        let mut held = release("v1.11.0", "i386-pc/a.mod");
        held.revision = Some(rev(2, 'b'));
        store.put(&held).await.unwrap();
        assert!(!wants(&store, "v1.11.0", None, &none));
        assert!(!wants(&store, "v1.11.0", Some(&rev(1, 'f')), &none));
        assert!(!wants(&store, "v1.11.0", Some(&rev(2, 'b')), &none));
        assert!(wants(&store, "v1.11.0", Some(&rev(2, 'c')), &none));
        assert!(wants(&store, "v1.11.0", Some(&rev(3, '0')), &none));
        // Damaged here: the member's copy is wanted whatever its revision.
        let damaged = BTreeMap::from([(
            "v1.11.0".to_string(),
            crate::catalog::Damage {
                blob: "b".repeat(64),
                reason: "test".into(),
                at: 0,
            },
        )]);
        assert!(wants(&store, "v1.11.0", None, &damaged));
        // The list sent to members carries the revision.
        let (versions, revisions) = held_versions(&store);
        assert_eq!(versions, ["v1.11.0"]);
        assert_eq!(revisions.get("v1.11.0"), Some(&rev(2, 'b')));
    }
}
