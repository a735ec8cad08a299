//! Who is logged in to the status page, and who may try again. Kept with
//! the daemon's HTTP state (one per daemon), used by `ui::auth`.
//!
//! Over TCP with `ingest.token`, a browser logs in with the token once and
//! then carries a session cookie. The session is a random id drawn at that
//! login (not a value derived from the token, which was the same for every
//! login and could not be revoked), kept in memory with its expiry, and
//! ended by logging out. A restart ends every session: the page then asks
//! for the token again.
//!
//! Wrong tokens are throttled, per client address and for everyone: a
//! token guessed at 100 tries a second (300 in 2.7 s, issue 28) is now
//! guessed at [`PER_CLIENT`] tries a minute, and no more than [`OVERALL`]
//! a minute from all addresses together. [`Throttle`] is the rule, a pure
//! type with a table test.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts after its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Wrong tokens one address may send in [`WINDOW`].
pub const PER_CLIENT: usize = 5;

/// Wrong tokens all addresses together may send in [`WINDOW`].
pub const OVERALL: usize = 30;

pub const WINDOW: Duration = Duration::from_secs(60);

/// At most this many addresses are remembered (the oldest is forgotten).
const CLIENTS: usize = 4096;

/// Failed logins in the last [`WINDOW`], per address and overall.
#[derive(Debug, Default)]
pub struct Throttle {
    clients: HashMap<IpAddr, VecDeque<Instant>>,
    overall: VecDeque<Instant>,
}

impl Throttle {
    /// `Err(wait)` when a login from `client` must wait that long first.
    pub fn check(&mut self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        self.forget_before(now);
        let full = |failures: &VecDeque<Instant>, limit: usize| {
            (failures.len() >= limit).then(|| {
                failures.front().map_or(WINDOW, |oldest| {
                    (*oldest + WINDOW).saturating_duration_since(now)
                })
            })
        };
        if let Some(wait) = full(&self.overall, OVERALL) {
            return Err(wait);
        }
        if let Some(failures) = client.and_then(|c| self.clients.get(&c))
            && let Some(wait) = full(failures, PER_CLIENT)
        {
            return Err(wait);
        }
        Ok(())
    }

    /// A wrong token from `client`.
    pub fn failed(&mut self, client: Option<IpAddr>, now: Instant) {
        self.overall.push_back(now);
        if let Some(client) = client {
            if !self.clients.contains_key(&client) && self.clients.len() >= CLIENTS {
                let oldest = self
                    .clients
                    .iter()
                    .min_by_key(|(_, f)| f.back().copied())
                    .map(|(c, _)| *c);
                if let Some(oldest) = oldest {
                    self.clients.remove(&oldest);
                }
            }
            self.clients.entry(client).or_default().push_back(now);
        }
    }

    /// The right token: that address starts afresh.
    pub fn succeeded(&mut self, client: Option<IpAddr>) {
        if let Some(client) = client {
            self.clients.remove(&client);
        }
    }

    fn forget_before(&mut self, now: Instant) {
        let stale = |at: &Instant| now.saturating_duration_since(*at) >= WINDOW;
        while self.overall.front().is_some_and(stale) {
            self.overall.pop_front();
        }
        self.clients.retain(|_, failures| {
            while failures.front().is_some_and(stale) {
                failures.pop_front();
            }
            !failures.is_empty()
        });
    }
}

/// The open sessions and the login throttle of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Instant>>,
    throttle: Mutex<Throttle>,
}

impl Sessions {
    /// A new session after a right token: its random id.
    pub fn open(&self, now: Instant) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, expires| *expires > now);
        open.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether `id` is an open, unexpired session.
    pub fn is_open(&self, id: &str, now: Instant) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|expires| *expires > now)
    }

    /// Logs `id` out.
    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_are_throttled_per_client_and_overall() {
        let start = Instant::now();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().expect("ip"));
        let b: Option<IpAddr> = Some("192.0.2.2".parse().expect("ip"));
        let mut throttle = Throttle::default();
        for _ in 0..PER_CLIENT {
            assert_eq!(throttle.check(a, start), Ok(()));
            throttle.failed(a, start);
        }
        // a has used its tries for the minute; b has not.
        assert_eq!(throttle.check(a, start), Err(WINDOW));
        assert_eq!(
            throttle.check(a, start + Duration::from_secs(50)),
            Err(Duration::from_secs(10))
        );
        assert_eq!(throttle.check(b, start), Ok(()));
        // A minute later, a may try again.
        assert_eq!(throttle.check(a, start + WINDOW), Ok(()));
        // A right token clears a's count at once.
        throttle.failed(a, start + WINDOW);
        throttle.succeeded(a);
        assert_eq!(throttle.check(a, start + WINDOW), Ok(()));

        // Many addresses together: everyone waits.
        let mut throttle = Throttle::default();
        for i in 0..OVERALL {
            let client = Some(IpAddr::from([198, 51, 100, i as u8]));
            throttle.failed(client, start);
        }
        assert_eq!(throttle.check(b, start), Err(WINDOW));
        assert_eq!(throttle.check(None, start + WINDOW), Ok(()));
    }

    #[test]
    fn sessions_are_random_expire_and_close() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let first = sessions.open(now);
        let second = sessions.open(now);
        assert_ne!(first, second, "a new id per login");
        assert_eq!(first.len(), 64);
        assert!(sessions.is_open(&first, now));
        assert!(!sessions.is_open(&first, now + SESSION_TTL), "expired");
        assert!(!sessions.is_open("forged", now));
        sessions.close(&second);
        assert!(!sessions.is_open(&second, now), "logged out");
    }
}
