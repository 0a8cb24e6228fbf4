//! Which clients are connected: joined, with a live session, heard from recently.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fedsim_types::ClientId;

#[derive(Debug, Clone)]
struct Entry {
    session: String,
    num_samples: u64,
    num_test_samples: u64,
    last_seen: Instant,
}

/// Connected clients and their sessions.
#[derive(Debug)]
pub struct Registry {
    clients: HashMap<ClientId, Entry>,
    sessions: HashMap<String, (Vec<ClientId>, Instant)>,
    /// Sessions by the connection they joined over.
    peers: HashMap<SocketAddr, Vec<String>>,
    timeout: Duration,
}

impl Registry {
    /// An empty registry; clients silent for longer than `timeout` count as disconnected.
    pub fn new(timeout: Duration) -> Self {
        Self {
            clients: HashMap::new(),
            sessions: HashMap::new(),
            peers: HashMap::new(),
            timeout,
        }
    }

    /// Registers `ids` under a new `session`, replacing any earlier session of those ids, if the caller
    /// may take them: an id held by a live session (heard from within the timeout) is taken only by
    /// that session's holder (`previous`, the session it got from its earlier join) or by a caller whose
    /// credential for the ids was verified (`verified`). Otherwise nothing changes and the first id
    /// held by another live session is returned. `peer` is the connection the join came over: when it
    /// closes ([`Registry::connection_closed`]) the session ends.
    pub fn join(
        &mut self,
        session: &str,
        ids: &[(ClientId, u64)],
        previous: &str,
        verified: bool,
        peer: Option<SocketAddr>,
    ) -> Result<(), ClientId> {
        if !verified
            && let Some(&(held, _)) = ids.iter().find(|(id, _)| {
                self.clients
                    .get(id)
                    .is_some_and(|e| e.session != previous && e.last_seen.elapsed() <= self.timeout)
            })
        {
            return Err(held);
        }
        let now = Instant::now();
        for &(id, num_samples) in ids {
            let old = self.clients.get(&id).map(|e| e.session.as_str());
            if let Some((list, _)) = old.and_then(|o| self.sessions.get_mut(o)) {
                list.retain(|c| *c != id);
            }
            self.clients.insert(
                id,
                Entry {
                    session: session.to_string(),
                    num_samples,
                    num_test_samples: 0,
                    last_seen: now,
                },
            );
        }
        self.sessions.insert(
            session.to_string(),
            (ids.iter().map(|(c, _)| *c).collect(), now),
        );
        self.sessions.retain(|_, (list, _)| !list.is_empty());
        if let Some(peer) = peer {
            let list = self.peers.entry(peer).or_default();
            // Sessions that have ended since do not pile up on a long-lived connection.
            list.retain(|s| self.sessions.contains_key(s));
            list.push(session.to_string());
        }
        Ok(())
    }

    /// Ends the sessions that joined over the connection from `peer`, which has closed: a killed
    /// client process releases its ids at once instead of after the heartbeat timeout (a live client
    /// that lost its connection joins again, naming its session).
    pub fn connection_closed(&mut self, peer: SocketAddr) {
        for session in self.peers.remove(&peer).unwrap_or_default() {
            let clients = self.sessions.get(&session).map_or(0, |(ids, _)| ids.len());
            if clients > 0 {
                tracing::info!(%peer, clients, "connection closed: its session ended and its clients left the run");
            }
            self.leave(&session);
        }
    }

    /// Marks every client of `session` as alive; false if the session is unknown.
    pub fn touch(&mut self, session: &str) -> bool {
        let now = Instant::now();
        let Some((ids, seen)) = self.sessions.get_mut(session) else {
            return false;
        };
        *seen = now;
        for id in ids.iter() {
            if let Some(e) = self.clients.get_mut(id) {
                e.last_seen = now;
            }
        }
        true
    }

    /// Removes a session and its clients.
    pub fn leave(&mut self, session: &str) {
        if let Some((ids, _)) = self.sessions.remove(session) {
            for id in ids {
                if self.clients.get(&id).is_some_and(|e| e.session == session) {
                    self.clients.remove(&id);
                }
            }
        }
    }

    /// Whether `session` owns client `id`.
    pub fn owns(&self, session: &str, id: ClientId) -> bool {
        self.clients.get(&id).is_some_and(|e| e.session == session)
    }

    /// Whether client `id` is connected and was heard from recently.
    pub fn is_alive(&self, id: ClientId) -> bool {
        self.clients
            .get(&id)
            .is_some_and(|e| e.last_seen.elapsed() <= self.timeout)
    }

    /// The number of samples client `id` declared.
    pub fn num_samples(&self, id: ClientId) -> Option<u64> {
        self.clients.get(&id).map(|e| e.num_samples)
    }

    /// Records the local test sizes the clients declared at join (after [`Registry::join`]).
    pub fn declare_test_samples(&mut self, sizes: &[(ClientId, u64)]) {
        for &(id, n) in sizes {
            if let Some(e) = self.clients.get_mut(&id) {
                e.num_test_samples = n;
            }
        }
    }

    /// The local test size `id` declared at join (federated evaluation).
    pub fn num_test_samples(&self, id: ClientId) -> Option<u64> {
        self.clients.get(&id).map(|e| e.num_test_samples)
    }

    /// Live clients, ascending.
    pub fn available(&self) -> Vec<ClientId> {
        let mut v: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, e)| e.last_seen.elapsed() <= self.timeout)
            .map(|(c, _)| *c)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_own_their_clients() {
        let mut r = Registry::new(Duration::from_secs(10));
        r.join("s1", &[(0, 10), (1, 20)], "", false, None).unwrap();
        r.join("s2", &[(1, 20)], "s1", false, None).unwrap();
        assert!(r.owns("s1", 0));
        assert!(
            !r.owns("s1", 1),
            "a rejoin by the holder moves the client to the new session"
        );
        assert_eq!(r.available(), vec![0, 1]);
        r.leave("s1");
        assert_eq!(r.available(), vec![1]);
        assert!(!r.touch("s1"));
        assert!(r.touch("s2"));
    }

    #[test]
    fn silent_clients_expire() {
        let mut r = Registry::new(Duration::from_millis(1));
        r.join("s", &[(3, 1)], "", false, None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.available().is_empty());
        assert!(!r.is_alive(3));
        // An expired id is free for anyone.
        r.join("t", &[(3, 1)], "", false, None).unwrap();
        assert!(r.owns("t", 3));
    }

    #[test]
    fn a_live_id_cannot_be_taken_over() {
        let mut r = Registry::new(Duration::from_secs(10));
        r.join("s1", &[(0, 10), (1, 20)], "", false, None).unwrap();
        // Another caller, without the session or a verified token: refused, nothing changes.
        assert_eq!(r.join("evil", &[(2, 5), (1, 20)], "", false, None), Err(1));
        assert_eq!(r.join("evil", &[(1, 20)], "wrong", false, None), Err(1));
        assert!(r.owns("s1", 1) && !r.owns("evil", 2) && !r.is_alive(2));
        // A verified credential may take it (a restarted client with its token).
        r.join("s2", &[(1, 20)], "", true, None).unwrap();
        assert!(r.owns("s2", 1));
        // Released on leave.
        r.leave("s2");
        r.join("s3", &[(1, 20)], "", false, None).unwrap();
        assert!(r.owns("s3", 1));
    }

    #[test]
    fn a_closed_connection_ends_its_sessions() {
        let mut r = Registry::new(Duration::from_secs(10));
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        r.join("s1", &[(0, 10)], "", false, Some(peer)).unwrap();
        r.join("s2", &[(1, 10)], "", false, None).unwrap();
        r.connection_closed(peer);
        assert!(!r.is_alive(0) && r.is_alive(1));
        r.join("s3", &[(0, 10)], "", false, None).unwrap();
        assert!(r.owns("s3", 0));
    }
}
