//! Peers made by hand with libp2p, to act as attackers do against a real `serve` process:
//!
//! * a stranger holds a member's hello unanswered (so it stays connected for the whole hello
//!   window, 10 s) and meanwhile asks the member's Kademlia for the peers it knows. A member
//!   answers Kademlia for members only, so the stranger learns no other member's ID or address
//!   (without the gate it learns them at once);
//! * a hostile member (a real identity and credential, from `cluster join`) floods a member
//!   with schematic requests: it gets its share of the answering places and "busy" beyond;
//! * sockets that connect and say nothing hold a node's places for connections in their
//!   handshake only until the handshake deadline, so a member still gets in;
//! * a stranger that subscribes to the cluster's topics during its hello window hears none
//!   of the announcements the members hear meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, kad, noise, tcp, yamux};

use image_factory::replication::protocol::{
    HELLO_PROTOCOL, Hello, HelloReply, KAD_PROTOCOL, SCHEMATICS_PROTOCOL, SchematicReply,
    SchematicRequest, membership_topic, schematics_topic,
};
use image_factory::replication::{ANSWER_DELAY_ENV, Cluster, identity};
use image_factory::trust::SigningKey;

use crate::replication::{
    Node, connected_member, create_schematic, invite_offline, join, peer, wait_for,
    wait_for_schematic,
};

/// What the stranger speaks: enough of the hello to be asked (never to answer), and Kademlia.
#[derive(NetworkBehaviour)]
struct Stranger {
    hello: request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// A founds a cluster and B joins it (in `tmp`), both running, B bootstrapped to A; B's ID.
async fn two_members(tmp: &Path) -> (Node, Node, String) {
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    let inv_b = tmp.join("b.invitation");
    let b_id = invite_offline(&a, &inv_b);
    join(&b, &inv_b);
    let node_a = Node::start(&a, &[]);
    let node_b = Node::start(&b, &node_a.bootstrap().await);
    (node_a, node_b, b_id)
}

/// A swarm of a hand-made peer with identity `key`, over TCP, running `behaviour`.
fn hand_made<B: NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::new(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|key| behaviour(key))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// The hello of a hand-made peer: it is asked (and may ask), on the members' protocol.
fn hello_protocol()
-> request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>> {
    request_response::Behaviour::new(
        [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default(),
    )
}

/// What the stranger's FIND_NODE to `member` brought back: the peers it learned, or why the
/// query ended without any.
async fn ask_for_peers(member: PeerId, addr: Multiaddr) -> Result<Vec<PeerId>, String> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let mut swarm = hand_made(key, |_| {
        let mut cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        cfg.set_query_timeout(Duration::from_secs(5));
        Stranger {
            hello: hello_protocol(),
            kad: kad::Behaviour::with_config(me, kad::store::MemoryStore::new(me), cfg),
        }
    });
    swarm.behaviour_mut().kad.add_address(&member, addr);
    swarm
        .behaviour_mut()
        .kad
        .get_closest_peers(PeerId::random());
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
    let (node_a, node_b, b_id) = two_members(tmp.path()).await;
    // B in A's routing table: a member, with an address (learnt by identify).
    wait_for(&node_a, "A knows B with an address", |st| {
        connected_member(st, &b_id)
            && peer(st, &b_id)
                .and_then(|p| p["addrs"].as_array())
                .is_some_and(|a| !a.is_empty())
    })
    .await;
    let a_id: PeerId = node_a.peer_id().await.parse().unwrap();
    let outcome = ask_for_peers(a_id, tcp_addr(&node_a).await).await;
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

/// What the hostile member speaks: the hello (with its real credential) and schematics.
#[derive(NetworkBehaviour)]
struct Hostile {
    hello: request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>>,
    schematics: request_response::Behaviour<
        request_response::json::codec::Codec<SchematicRequest, SchematicReply>,
    >,
}

/// The member `TCP` address of `node`, without its `/p2p/` part.
async fn tcp_addr(node: &Node) -> Multiaddr {
    let mut a: Multiaddr = node
        .bootstrap()
        .await
        .into_iter()
        .find(|a| a.contains("/tcp/"))
        .expect("a TCP address")
        .parse()
        .unwrap();
    a.pop();
    a
}

/// Joins as the member whose data directory is `dir` (its identity and credential), then
/// sends `member` `requests` schematic batches at once; their answers, in arrival order.
async fn flood_schematics(
    dir: &Path,
    member: PeerId,
    addr: Multiaddr,
    requests: usize,
) -> Vec<SchematicReply> {
    let key = identity::load(&identity::path(dir))
        .expect("identity")
        .expect("joined: an identity");
    let (signing, _) = SigningKey::load_or_generate(&dir.join("keys/signing-key.pem")).unwrap();
    let m = Cluster::open(dir, Arc::new(signing))
        .unwrap()
        .membership()
        .expect("joined: a membership");
    let hello = Hello {
        cluster: Some(m.record.cluster.clone()),
        credential: m.credential.clone(),
    };
    let mut swarm = hand_made(key, |_| Hostile {
        hello: hello_protocol(),
        schematics: request_response::Behaviour::new(
            [(
                StreamProtocol::new(SCHEMATICS_PROTOCOL),
                ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
        ),
    });
    swarm.dial(addr).expect("dial");
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while replies.len() < requests {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .unwrap_or_else(|_| panic!("{} of {requests} answers in 40 s", replies.len()));
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == member => {
                swarm
                    .behaviour_mut()
                    .hello
                    .send_request(&member, hello.clone());
            }
            SwarmEvent::Behaviour(HostileEvent::Hello(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) => {
                let welcome = HelloReply::Welcome {
                    revocations: Vec::new(),
                    peers: Vec::new(),
                };
                let _ = swarm.behaviour_mut().hello.send_response(channel, welcome);
            }
            SwarmEvent::Behaviour(HostileEvent::Hello(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                assert!(
                    matches!(response, HelloReply::Welcome { .. }),
                    "the member refused a real credential: {response:?}"
                );
                // Judged a member: now everything at once, each batch the most allowed.
                for i in 0..requests {
                    let ids = (0..32).map(|j| format!("{:064x}", i * 32 + j)).collect();
                    swarm
                        .behaviour_mut()
                        .schematics
                        .send_request(&member, SchematicRequest::Get { ids });
                }
            }
            SwarmEvent::Behaviour(HostileEvent::Schematics(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => replies.push(response),
            SwarmEvent::Behaviour(HostileEvent::Schematics(
                request_response::Event::OutboundFailure { error, .. },
            )) => panic!("a schematic request failed: {error}"),
            _ => {}
        }
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_requests_gets_its_share_and_busy_beyond() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, h) = (tmp.path().join("a"), tmp.path().join("h"));
    let inv = tmp.path().join("h.invitation");
    invite_offline(&a, &inv);
    join(&h, &inv);
    // Each batch A answers is held 3 s: the flood's requests all arrive while the first are
    // still being answered.
    let node_a = Node::start_with(&a, &[], &[(ANSWER_DELAY_ENV, "3000")]);
    let a_id: PeerId = node_a.peer_id().await.parse().unwrap();
    const SHARE: usize = 8; // MAX_ANSWERING_PER_PEER
    const FLOOD: usize = 20;
    let replies = flood_schematics(&h, a_id, tcp_addr(&node_a).await, FLOOD).await;
    let busy = replies
        .iter()
        .filter(|r| matches!(r, SchematicReply::Refused { reason } if reason.contains("busy")))
        .count();
    let answered = replies
        .iter()
        .filter(|r| matches!(r, SchematicReply::Schematics { .. }))
        .count();
    assert_eq!(
        (answered, busy),
        (SHARE, FLOOD - SHARE),
        "answers: {replies:?}"
    );
    let text = node_a.metrics_text().await;
    let counted = text
        .lines()
        .find_map(|l| l.strip_prefix("image_factory_replication_requests_busy_total "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    assert_eq!(counted, Some(FLOOD - SHARE), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_shut_a_member_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let inv = tmp.path().join("b.invitation");
    let b_id = invite_offline(&a, &inv);
    join(&b, &inv);
    let node_a = Node::start(&a, &[]);
    let port = tcp_addr(&node_a)
        .await
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port");
    // More silent sockets than A takes connections in their handshake (64, QUIC's and TCP's
    // together): without the handshake deadline (10 s) they hold every place for ever, and B,
    // which knows only A's addresses, never gets in.
    let mut silent = Vec::new();
    for _ in 0..72 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        );
    }
    let node_b = Node::start(&b, &node_a.bootstrap().await);
    wait_for(&node_a, "A accepts B despite the silent sockets", |st| {
        connected_member(st, &b_id)
    })
    .await;
    // The deadline is what freed the places: A closed the silent sockets.
    let mut closed = 0;
    for s in &mut silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), async {
            use tokio::io::AsyncReadExt as _;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {} // multistream-select's greeting
                }
            }
        })
        .await;
        closed += usize::from(read == Ok(true));
    }
    assert!(
        closed >= 64,
        "only {closed} of 72 silent sockets were closed"
    );
    drop(node_b);
}

/// What the eavesdropper speaks: enough of the hello to be asked (never to answer), and
/// gossipsub.
#[derive(NetworkBehaviour)]
struct Eavesdropper {
    hello: request_response::Behaviour<request_response::json::codec::Codec<Hello, HelloReply>>,
    gossipsub: gossipsub::Behaviour,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_subscribed_in_its_hello_window_hears_no_announcement() {
    let tmp = tempfile::tempdir().unwrap();
    let (node_a, node_b, b_id) = two_members(tmp.path()).await;
    wait_for(&node_a, "A accepts B", |st| connected_member(st, &b_id)).await;
    let cluster = node_a.status().await["replication"]["cluster"]["id"]
        .as_str()
        .expect("a cluster ID")
        .to_string();

    // The stranger knows the topics' names (A tells every peer its subscriptions) and
    // subscribes to both; it holds A's hello, so A judges it only after 10 s.
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = hand_made(key, |key| {
        let config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(200))
            .build()
            .expect("gossipsub config");
        Eavesdropper {
            hello: hello_protocol(),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                config,
            )
            .expect("gossipsub"),
        }
    });
    for t in [membership_topic(&cluster), schematics_topic(&cluster)] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(t))
            .expect("subscribe");
    }
    swarm.dial(tcp_addr(&node_a).await).expect("dial");
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let listening = tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        let mut held = Vec::new();
        let mut heard = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        while let Ok(event) = tokio::time::timeout_at(until, swarm.select_next_some()).await {
            match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                SwarmEvent::Behaviour(EavesdropperEvent::Hello(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => held.push(channel),
                SwarmEvent::Behaviour(EavesdropperEvent::Gossipsub(
                    gossipsub::Event::Message { message, .. },
                )) => heard.push(String::from_utf8_lossy(&message.data).into_owned()),
                _ => {}
            }
        }
        heard
    });
    connected_rx.await.expect("the stranger connected to A");
    // Subscriptions exchanged (and, were it scored like a member, a mesh place taken).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (id, canonical) = create_schematic(
        &node_a,
        "customization: {extraKernelArgs: [eavesdropped=1]}",
    )
    .await;
    // B, a member, hears of it (gossip, within the stranger's window) and fetches it.
    wait_for_schematic(&node_b, "B", &id, &canonical).await;
    let heard = listening.await.expect("the stranger's task");
    assert!(
        heard.is_empty(),
        "the stranger heard the members' gossip: {heard:?}"
    );
}
