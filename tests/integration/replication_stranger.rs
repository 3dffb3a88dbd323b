//! A stranger on the network, made by hand with libp2p: it holds a member's hello unanswered
//! (so it stays connected for the whole hello window, 10 s) and meanwhile asks the member's
//! Kademlia for the peers it knows. A member answers Kademlia for members only, so the
//! stranger learns no other member's ID or address (without the gate it learns them at once).

use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, kad, noise, tcp, yamux};

use image_factory::replication::protocol::{HELLO_PROTOCOL, Hello, HelloReply, KAD_PROTOCOL};

use crate::replication::{Node, connected_member, invite_offline, join, peer, wait_for};

/// What the stranger speaks: enough of the hello to be asked (never to answer), and Kademlia.
#[derive(NetworkBehaviour)]
struct Stranger {
    hello: request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// What the stranger's FIND_NODE to `member` brought back: the peers it learned, or why the
/// query ended without any.
async fn ask_for_peers(member: PeerId, addr: Multiaddr) -> Result<Vec<PeerId>, String> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::new(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| {
            let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            cfg.set_query_timeout(Duration::from_secs(5));
            Stranger {
                hello: request_response::Behaviour::new(
                    [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
                kad: kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg),
            }
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm.behaviour_mut().kad.add_address(&member, addr);
    swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
    // Hellos held unanswered: the member waits for them until it refuses us as silent.
    let mut held = Vec::new();
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| format!("no answer within 8 s (connected: {connected})"))?;
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == member => {
                connected = true;
            }
            SwarmEvent::Behaviour(StrangerEvent::Hello(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) => held.push(channel),
            SwarmEvent::Behaviour(StrangerEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            })) if step.last => {
                assert!(connected, "the query ended before the stranger connected");
                return match result {
                    Ok(ok) => Ok(ok.peers.into_iter().map(|p| p.peer_id).collect()),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => {
                        Ok(peers.into_iter().map(|p| p.peer_id).collect())
                    }
                    Err(e) => Err(e.to_string()),
                };
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_asking_a_members_kademlia_learns_no_member() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let inv_b = tmp.path().join("b.invitation");
    let b_id = invite_offline(&a, &inv_b);
    join(&b, &inv_b);
    let node_a = Node::start(&a, &[]);
    let node_b = Node::start(&b, &node_a.bootstrap().await);
    // B in A's routing table: a member, with an address (learnt by identify).
    wait_for(&node_a, "A knows B with an address", |st| {
        connected_member(st, &b_id)
            && peer(st, &b_id)
                .and_then(|p| p["addrs"].as_array())
                .is_some_and(|a| !a.is_empty())
    })
    .await;
    let a_id: PeerId = node_a.peer_id().await.parse().unwrap();
    let mut tcp: Multiaddr = node_a
        .bootstrap()
        .await
        .into_iter()
        .find(|a| a.contains("/tcp/"))
        .expect("a TCP address")
        .parse()
        .unwrap();
    tcp.pop(); // its `/p2p/<peer id>`
    let outcome = ask_for_peers(a_id, tcp).await;
    let b_peer: PeerId = b_id.parse().unwrap();
    if let Ok(peers) = &outcome {
        assert!(
            !peers.contains(&b_peer),
            "the stranger learnt member B from A: {peers:?}"
        );
    }
    // The query ran to its end (its own 5 s timeout: the member holds the request until the
    // stranger is judged, then drops it with the connection), so the check above is not void.
    let reason = outcome.err().unwrap_or_default();
    assert!(
        !reason.contains("no answer within"),
        "the stranger's query did not end: {reason}"
    );
    drop(node_b);
}
