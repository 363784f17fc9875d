//! Who may hold a PostgreSQL connection (issue 18, item 7; SECURITY.md).
//!
//! Anyone who can open a TCP connection to the port can start a login, so a connection that has not
//! logged in must never take what a user needs:
//! - the connection limit (`max_connections`) counts logged-in connections only; a slot is taken at the
//!   login's last step and given back when the connection ends;
//! - a login must finish within `startup_timeout` (10 s, not pgwire's 60 s), or the connection is closed;
//! - one address may have at most `pending_per_address` logins under way; one more closes its oldest
//!   (so a flood of idle sockets from one address cannot keep that address's users out, and it cannot
//!   starve other addresses either), and at most `pending_max` in all, past which new ones are refused.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The limits of `Admission`.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Most logged-in connections.
    pub max_connections: usize,
    /// How long a login may take.
    pub startup_timeout: Duration,
    /// Most logins under way from one address; one more closes the oldest.
    pub pending_per_address: usize,
    /// Most logins under way in all; more are refused.
    pub pending_max: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_connections: 256,
            startup_timeout: Duration::from_secs(10),
            pending_per_address: 16,
            pending_max: 1024,
        }
    }
}

/// One connection's standing.
pub struct Ticket {
    /// Notified when the login succeeded (and a slot was taken).
    pub authenticated: Notify,
    /// Notified when a newer login from the same address pushed this one out.
    pub evicted: Notify,
    /// Set when the client is gone (closed, reset, or sent Terminate) while a statement may still run.
    pub gone: tokio::sync::watch::Sender<bool>,
}

impl Default for Ticket {
    fn default() -> Self {
        Ticket { authenticated: Notify::new(), evicted: Notify::new(), gone: tokio::sync::watch::Sender::new(false) }
    }
}

impl Ticket {
    /// Resolves once the client is gone.
    pub async fn gone(&self) {
        let mut gone = self.gone.subscribe();
        let _ = gone.wait_for(|g| *g).await;
    }
}

/// Watches a connection's socket (a duplicate of its descriptor) for the client going away while the
/// server is busy with a statement and reads nothing: the peer closed or reset it, or the next bytes
/// waiting are a Terminate message (`X`; never the first byte of a TLS record, so under TLS only a
/// close or reset is seen). Peeks every `every`; returns when the client is gone.
pub async fn watch_peer(socket: std::net::TcpStream, every: Duration) {
    let mut byte = [0u8; 1];
    loop {
        tokio::time::sleep(every).await;
        match socket.peek(&mut byte) {
            Ok(0) => return,
            Ok(_) if byte[0] == b'X' => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<IpAddr, VecDeque<(SocketAddr, Arc<Ticket>)>>,
    pending_total: usize,
    /// Logged-in connections: their slot and ticket.
    slots: HashMap<SocketAddr, (OwnedSemaphorePermit, Arc<Ticket>)>,
    /// Every connection's ticket, logged in or not.
    tickets: HashMap<SocketAddr, Arc<Ticket>>,
}

/// The connection limits of one server.
pub struct Admission {
    limits: AdmissionLimits,
    logged_in: Arc<Semaphore>,
    state: Mutex<State>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            logged_in: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            state: Mutex::new(State::default()),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection from `addr` starts its login; `None` when too many logins are under way.
    pub fn admit(&self, addr: SocketAddr) -> Option<Arc<Ticket>> {
        let mut state = self.state();
        let queue_len = state.pending.get(&addr.ip()).map_or(0, VecDeque::len);
        if queue_len >= self.limits.pending_per_address.max(1) {
            let queue = state.pending.get_mut(&addr.ip()).expect("counted above");
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.evicted.notify_one();
                state.pending_total -= 1;
            }
        } else if state.pending_total >= self.limits.pending_max.max(1) {
            return None;
        }
        let ticket = Arc::new(Ticket::default());
        state.pending.entry(addr.ip()).or_default().push_back((addr, ticket.clone()));
        state.pending_total += 1;
        state.tickets.insert(addr, ticket.clone());
        Some(ticket)
    }

    /// The ticket of the connection from `addr`.
    pub fn ticket(&self, addr: SocketAddr) -> Option<Arc<Ticket>> {
        self.state().tickets.get(&addr).cloned()
    }

    fn unpend(state: &mut State, addr: SocketAddr) -> Option<Arc<Ticket>> {
        let queue = state.pending.get_mut(&addr.ip())?;
        let at = queue.iter().position(|(a, _)| *a == addr)?;
        let (_, ticket) = queue.remove(at)?;
        if queue.is_empty() {
            state.pending.remove(&addr.ip());
        }
        state.pending_total -= 1;
        Some(ticket)
    }

    /// A slot for the login's last step, if one is free: taken before the step, so that a connection
    /// that logs in never finds the server full after it was told it is in.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.logged_in.clone().try_acquire_owned().ok()
    }

    /// The connection from `addr` logged in and keeps `slot` until it ends.
    pub fn logged_in(&self, addr: SocketAddr, slot: OwnedSemaphorePermit) {
        let mut state = self.state();
        let ticket = Self::unpend(&mut state, addr);
        if let Some(ticket) = ticket {
            ticket.authenticated.notify_one();
            state.slots.insert(addr, (slot, ticket));
        }
    }

    /// Whether the connection from `addr` has logged in.
    pub fn is_logged_in(&self, addr: SocketAddr) -> bool {
        self.state().slots.contains_key(&addr)
    }

    /// The connection from `addr` ended: its login or its slot is given back.
    pub fn ended(&self, addr: SocketAddr) {
        let mut state = self.state();
        Self::unpend(&mut state, addr);
        state.slots.remove(&addr);
        if let Some(ticket) = state.tickets.remove(&addr) {
            ticket.gone.send_replace(true);
        }
    }

    /// Logins under way, and logged-in connections.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending_total, state.slots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn one_address_cannot_hold_more_than_its_share_of_logins_and_slots_count_logged_in_connections() {
        let limits =
            AdmissionLimits { max_connections: 2, pending_per_address: 3, pending_max: 5, ..Default::default() };
        let admission = Admission::new(limits);
        let flood: Vec<Arc<Ticket>> = (0..3).map(|p| admission.admit(addr([10, 0, 0, 1], p)).unwrap()).collect();
        // A fourth from the same address pushes the oldest out instead of being refused.
        let newest = admission.admit(addr([10, 0, 0, 1], 3)).unwrap();
        assert_eq!(admission.counts(), (3, 0));
        let evicted = flood[0].evicted.notified();
        futures::executor::block_on(evicted);
        // Other addresses are refused only past the total.
        admission.admit(addr([10, 0, 0, 2], 1)).unwrap();
        admission.admit(addr([10, 0, 0, 3], 1)).unwrap();
        assert!(admission.admit(addr([10, 0, 0, 4], 1)).is_none(), "more logins under way than pending_max");
        // Logging in moves a connection from the logins to the slots; the slots are the limit.
        let slot = admission.reserve().unwrap();
        admission.logged_in(addr([10, 0, 0, 1], 3), slot);
        futures::executor::block_on(newest.authenticated.notified());
        assert!(admission.is_logged_in(addr([10, 0, 0, 1], 3)));
        let second = admission.reserve().unwrap();
        assert!(admission.reserve().is_none(), "two slots");
        drop(second);
        admission.ended(addr([10, 0, 0, 1], 3));
        assert_eq!(admission.counts(), (4, 0));
        assert!(admission.reserve().is_some(), "an ended connection gives its slot back");
    }
}
