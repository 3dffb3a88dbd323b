//! Connection admission: a global cap on open connections, and which ones to shed when a new
//! client arrives at the cap. A connection is in one of three states; at the cap, the oldest
//! connection still sending its request head is shed first, then the oldest idle keep-alive
//! one, so a new client is served within moments. Only when every connection is busy
//! answering a request is the newcomer refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

use tokio::sync::watch;

use super::Limits;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Answering a request (or several, on HTTP/2).
    Busy,
    /// Between requests on a kept-alive connection.
    Idle,
}

/// A connection's entry: its state, since when, and its shed switch.
struct Entry {
    state: ConnState,
    since: Instant,
    shed: watch::Sender<bool>,
}

struct Table {
    next: u64,
    /// Connections counted against the cap (a shed one leaves at once, before it closes).
    open: BTreeMap<u64, Entry>,
}

/// The open connections of one listener (cheap to clone).
#[derive(Clone)]
pub struct Conns {
    limits: Limits,
    max: usize,
    table: Arc<Mutex<Table>>,
    /// Connections shed or refused since start (for logs and tests).
    shed_total: Arc<std::sync::atomic::AtomicU64>,
}

/// One admitted connection; leaving it removes the connection from the table.
pub struct ConnGuard {
    id: u64,
    conns: Conns,
    state: watch::Sender<(ConnState, Instant)>,
    shed: watch::Receiver<bool>,
}

impl Conns {
    /// A table admitting at most `limits.max_connections` at once (at least 1), whose
    /// connections time out as `limits` says.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            max: limits.max_connections.max(1),
            table: Arc::new(Mutex::new(Table {
                next: 0,
                open: BTreeMap::new(),
            })),
            shed_total: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now (those being shed excluded).
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Connections shed or refused since start.
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Admits a new connection (in [`ConnState::Head`]), shedding an older one at the cap;
    /// `None` when every open connection is busy (refuse the newcomer).
    pub fn admit(&self) -> Option<ConnGuard> {
        let now = Instant::now();
        let mut t = self.lock();
        if t.open.len() >= self.max {
            let victim =
                oldest(&t.open, ConnState::Head).or_else(|| oldest(&t.open, ConnState::Idle));
            let Some(id) = victim else {
                self.count_shed();
                return None;
            };
            if let Some(entry) = t.open.remove(&id) {
                let _ = entry.shed.send(true);
                self.count_shed();
            }
        }
        let id = t.next;
        t.next += 1;
        let (tx, rx) = watch::channel(false);
        t.open.insert(
            id,
            Entry {
                state: ConnState::Head,
                since: now,
                shed: tx,
            },
        );
        drop(t);
        Some(ConnGuard {
            id,
            conns: self.clone(),
            state: watch::Sender::new((ConnState::Head, now)),
            shed: rx,
        })
    }

    fn count_shed(&self) {
        self.shed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The oldest connection in `state`.
fn oldest(open: &BTreeMap<u64, Entry>, state: ConnState) -> Option<u64> {
    open.iter()
        .filter(|(_, e)| e.state == state)
        .min_by_key(|(id, e)| (e.since, **id))
        .map(|(id, _)| *id)
}

impl ConnGuard {
    /// Moves the connection to `state` (the time in it starts now).
    pub fn set(&self, state: ConnState) {
        let now = Instant::now();
        let changed = self.state.send_if_modified(|s| {
            if s.0 == state {
                return false;
            }
            *s = (state, now);
            true
        });
        if !changed {
            return;
        }
        if let Some(e) = self.conns.lock().open.get_mut(&self.id) {
            e.state = state;
            e.since = now;
        }
    }

    /// The state and since when.
    pub fn state(&self) -> (ConnState, Instant) {
        *self.state.borrow()
    }

    /// Resolves when the connection has been in its head or idle state longer than the
    /// listener allows; answers which wait ran out.
    pub async fn expired(&self) -> &'static str {
        let limits = self.conns.limits;
        let mut rx = self.state.subscribe();
        loop {
            let (state, since) = *rx.borrow_and_update();
            let (deadline, what) = match state {
                ConnState::Head => (since + limits.head_timeout, "request head"),
                ConnState::Idle => (since + limits.idle_timeout, "next request"),
                ConnState::Busy => {
                    // The sender lives as long as `self`.
                    let _ = rx.changed().await;
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return what,
                _ = rx.changed() => {}
            }
        }
    }

    /// Resolves when the connection is to be closed to make room for a newer one.
    pub async fn shed(&self) {
        let mut rx = self.shed.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether the connection has been told to close.
    pub fn is_shed(&self) -> bool {
        *self.shed.borrow()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        let s = std::time::Duration::from_secs;
        Limits {
            head_timeout: s(10),
            idle_timeout: s(60),
            write_timeout: s(60),
            max_connections: max,
        }
    }

    #[test]
    fn at_the_cap_heads_go_first_then_idle_then_newcomers_are_refused() {
        let conns = Conns::new(limits(3));
        let a = conns.admit().unwrap();
        let b = conns.admit().unwrap();
        let c = conns.admit().unwrap();
        a.set(ConnState::Busy);
        b.set(ConnState::Idle);
        // c is still in its head: it goes first.
        let d = conns.admit().unwrap();
        assert!(c.is_shed() && !b.is_shed() && !a.is_shed());
        d.set(ConnState::Busy);
        // No head left: the idle one goes.
        let e = conns.admit().unwrap();
        assert!(b.is_shed());
        e.set(ConnState::Busy);
        // Everyone busy: the newcomer is refused.
        assert!(conns.admit().is_none());
        assert_eq!(conns.open(), 3);
        assert_eq!(conns.shed_total(), 3);
        drop(a);
        assert_eq!(conns.open(), 2);
        assert!(conns.admit().is_some());
        drop((b, c));
    }

    #[test]
    fn the_oldest_head_is_shed() {
        let conns = Conns::new(limits(2));
        let first = conns.admit().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = conns.admit().unwrap();
        let _third = conns.admit().unwrap();
        assert!(first.is_shed());
        assert!(!second.is_shed());
    }

    #[tokio::test(start_paused = true)]
    async fn head_and_idle_waits_expire_busy_never_does() {
        let conns = Conns::new(limits(8));
        let g = conns.admit().unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(g.expired().await, "request head");
        assert_eq!(started.elapsed().as_secs(), 10);
        g.set(ConnState::Busy);
        let busy = tokio::time::timeout(std::time::Duration::from_secs(3600), g.expired()).await;
        assert!(busy.is_err(), "a busy connection expired");
        g.set(ConnState::Idle);
        let started = tokio::time::Instant::now();
        assert_eq!(g.expired().await, "next request");
        assert_eq!(started.elapsed().as_secs(), 60);
    }
}
