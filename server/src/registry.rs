//! Which clients are connected: joined, with a live session, heard from recently.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fedsim_types::ClientId;

#[derive(Debug, Clone)]
struct Entry {
    session: String,
    num_samples: u64,
    last_seen: Instant,
}

/// Connected clients and their sessions.
#[derive(Debug)]
pub struct Registry {
    clients: HashMap<ClientId, Entry>,
    sessions: HashMap<String, (Vec<ClientId>, Instant)>,
    timeout: Duration,
}

impl Registry {
    /// An empty registry; clients silent for longer than `timeout` count as disconnected.
    pub fn new(timeout: Duration) -> Self {
        Self {
            clients: HashMap::new(),
            sessions: HashMap::new(),
            timeout,
        }
    }

    /// Registers `ids` under a new `session`, replacing any earlier session of those ids.
    pub fn join(&mut self, session: &str, ids: &[(ClientId, u64)]) {
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
                    last_seen: now,
                },
            );
        }
        self.sessions.insert(
            session.to_string(),
            (ids.iter().map(|(c, _)| *c).collect(), now),
        );
        self.sessions.retain(|_, (list, _)| !list.is_empty());
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
        r.join("s1", &[(0, 10), (1, 20)]);
        r.join("s2", &[(1, 20)]);
        assert!(r.owns("s1", 0));
        assert!(
            !r.owns("s1", 1),
            "a rejoin moves the client to the new session"
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
        r.join("s", &[(3, 1)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(r.available().is_empty());
        assert!(!r.is_alive(3));
    }
}
