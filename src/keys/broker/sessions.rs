//! The broker's session table and the limits that keep anonymous callers from filling it.
//!
//! `/auth` needs no credential, so everything an anonymous caller can make the broker hold is
//! bounded, per peer and in all:
//!
//! - **Challenges** (`auth` answered, `attest` not yet) live in their own table, apart from
//!   attested sessions, so no number of challenges can crowd out or evict an attested
//!   session. A peer holds at most [`PeerLimits::challenges_per_peer`] open challenges: a new
//!   one replaces that peer's oldest (a peer can only crowd out itself). The whole table holds
//!   at most [`PeerLimits::max_challenges`]; when it is full the oldest challenge of all is
//!   replaced.
//! - **`auth` calls** are metered per peer by a token bucket ([`PeerLimits::auth_burst`],
//!   [`PeerLimits::auth_per_second`]); a peer over its rate is answered 429 with
//!   `Retry-After`, before its body is read.
//! - **Attested sessions** hold only what the release decision needs (the verified claims,
//!   the TEE key and the bound report_data), never the evidence. A peer holds at most
//!   [`PeerLimits::sessions_per_peer`], the table [`PeerLimits::max_sessions`]; past either,
//!   `attest` is answered 429 before the evidence is verified. Attested sessions are never
//!   evicted: they end when they expire.
//!
//! A peer is an IPv4 address, or an IPv6 /64 (one host's usual allocation), so an IPv6 caller
//! cannot multiply its limits by changing the low bits of its address.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use confidant_attestation::Appraised;

use crate::keys::error::BrokerError;
use crate::keys::jwe::TeePubKey;

/// How much one peer, and all peers together, may make the broker hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLimits {
    /// Open (unanswered) challenges per peer; a new one replaces the peer's oldest.
    pub challenges_per_peer: usize,
    /// Open challenges in all; when full, a new one replaces the oldest of all.
    pub max_challenges: usize,
    /// Attested sessions per peer; past it, `attest` is answered 429.
    pub sessions_per_peer: usize,
    /// Attested sessions in all; past it, `attest` is answered 503.
    pub max_sessions: usize,
    /// `auth` calls a peer may make at once.
    pub auth_burst: u32,
    /// `auth` calls per second a peer regains, up to the burst.
    pub auth_per_second: f64,
    /// Peers tracked at once (their buckets and counts); past it, idle peers are forgotten,
    /// and if none is idle a new peer is answered 503.
    pub max_peers: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            challenges_per_peer: DEFAULT_CHALLENGES_PER_PEER,
            max_challenges: DEFAULT_MAX_CHALLENGES,
            sessions_per_peer: DEFAULT_SESSIONS_PER_PEER,
            max_sessions: MAX_SESSIONS,
            auth_burst: 16,
            auth_per_second: 4.0,
            max_peers: 65_536,
        }
    }
}

/// Default open challenges per peer.
pub const DEFAULT_CHALLENGES_PER_PEER: usize = 16;
/// Default open challenges in all.
pub const DEFAULT_MAX_CHALLENGES: usize = 4_096;
/// Default attested sessions per peer (a server attests once per model it loads).
pub const DEFAULT_SESSIONS_PER_PEER: usize = 128;
/// Default attested sessions in all.
pub const MAX_SESSIONS: usize = 10_000;

/// Who is calling, for the limits: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Peer {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Peer {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&o[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            Self::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// An open challenge.
struct Challenge {
    nonce: String,
    tee: String,
    peer: Peer,
    seq: u64,
    expires: Instant,
}

/// What the release decision needs from an attested session, and nothing more.
#[derive(Debug)]
pub(super) struct Attested {
    /// The verified claims (no certificates, report or quote).
    pub(super) appraised: Appraised,
    /// The key the resource is encrypted to.
    pub(super) tee_pubkey: TeePubKey,
    /// The report_data the evidence bound (the runtime-data digest, padded).
    pub(super) report_data: [u8; 64],
    /// The verdicts on the GPU evidence the session presented (integrity verified at attest;
    /// judged per resource by its policy's `[gpu]` section); empty for a server on CPU.
    pub(super) gpus: Vec<confidant_attestation::GpuVerdict>,
}

struct Session {
    attested: Arc<Attested>,
    peer: Peer,
    expires: Instant,
}

/// One peer's counts and `auth` bucket.
struct PeerState {
    /// Its open challenges, oldest first.
    challenges: VecDeque<String>,
    sessions: usize,
    tokens: f64,
    refilled: Instant,
}

impl PeerState {
    fn new(limits: &PeerLimits, now: Instant) -> Self {
        Self {
            challenges: VecDeque::new(),
            sessions: 0,
            tokens: f64::from(limits.auth_burst),
            refilled: now,
        }
    }

    fn refill(&mut self, limits: &PeerLimits, now: Instant) {
        let gained = now.duration_since(self.refilled).as_secs_f64() * limits.auth_per_second;
        self.tokens = (self.tokens + gained).min(f64::from(limits.auth_burst));
        self.refilled = now;
    }

    /// Holds nothing and has its whole burst: forgetting it changes nothing.
    fn idle(&self, limits: &PeerLimits, now: Instant) -> bool {
        let full = self.tokens
            + now.duration_since(self.refilled).as_secs_f64() * limits.auth_per_second
            >= f64::from(limits.auth_burst);
        self.challenges.is_empty() && self.sessions == 0 && full
    }
}

#[derive(Default)]
struct Table {
    challenges: HashMap<String, Challenge>,
    /// Challenge ids by issue order (`seq`), to find the oldest of all.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    sessions: HashMap<String, Session>,
    peers: HashMap<Peer, PeerState>,
}

impl Table {
    fn remove_challenge(&mut self, id: &str) -> Option<Challenge> {
        let c = self.challenges.remove(id)?;
        self.order.remove(&c.seq);
        if let Some(p) = self.peers.get_mut(&c.peer)
            && let Some(at) = p.challenges.iter().position(|x| x == id)
        {
            p.challenges.remove(at);
        }
        Some(c)
    }

    fn remove_session(&mut self, id: &str) -> Option<Session> {
        let s = self.sessions.remove(id)?;
        if let Some(p) = self.peers.get_mut(&s.peer) {
            p.sessions = p.sessions.saturating_sub(1);
        }
        Some(s)
    }

    /// Drops challenges that expired (in issue order, which is expiry order: one lifetime
    /// for all).
    fn purge_challenges(&mut self, now: Instant) {
        while let Some((&seq, id)) = self.order.first_key_value() {
            match self.challenges.get(id) {
                Some(c) if c.expires > now => break,
                Some(_) => {
                    let id = id.clone();
                    self.remove_challenge(&id);
                }
                None => {
                    self.order.remove(&seq);
                }
            }
        }
    }

    fn purge_sessions(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_session(&id);
        }
    }

    /// The peer's state, making room for a new peer if the table allows.
    fn peer(
        &mut self,
        peer: Peer,
        limits: &PeerLimits,
        now: Instant,
    ) -> Result<&mut PeerState, BrokerError> {
        if !self.peers.contains_key(&peer) && self.peers.len() >= limits.max_peers {
            self.peers.retain(|_, p| !p.idle(limits, now));
            if self.peers.len() >= limits.max_peers {
                return Err(BrokerError::Busy(self.peers.len()));
            }
        }
        Ok(self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(limits, now)))
    }
}

/// The session table.
pub(super) struct Sessions {
    table: Mutex<Table>,
    limits: PeerLimits,
    challenge_ttl: Duration,
    session_ttl: Duration,
}

/// Why `attest` found no challenge to answer.
pub(super) enum NoChallenge {
    /// Never issued, expired and purged, replaced, or already answered.
    Unknown,
    /// The session has attested already.
    Attested,
    /// The challenge expired.
    Expired,
}

impl Sessions {
    pub(super) fn new(limits: PeerLimits, challenge_ttl: Duration, session_ttl: Duration) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            limits,
            challenge_ttl,
            session_ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends one of `peer`'s `auth` tokens, or says when the next one comes (429).
    pub(super) fn admit_auth(&self, peer: Peer, now: Instant) -> Result<(), BrokerError> {
        let limits = self.limits;
        let mut table = self.lock();
        let state = table.peer(peer, &limits, now)?;
        state.refill(&limits, now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return Ok(());
        }
        let wait = if limits.auth_per_second > 0.0 {
            (1.0 - state.tokens) / limits.auth_per_second
        } else {
            60.0
        };
        Err(BrokerError::TooManyRequests {
            what: format!(
                "{peer} is over its rate of {} auth calls per second (burst {})",
                limits.auth_per_second, limits.auth_burst
            ),
            retry_after: Duration::from_secs_f64(wait.clamp(1.0, 3600.0)),
        })
    }

    /// Records a new challenge for `peer` under `id`, replacing the peer's oldest (or the
    /// oldest of all) when a limit is reached.
    pub(super) fn open_challenge(
        &self,
        peer: Peer,
        id: String,
        nonce: String,
        tee: String,
        now: Instant,
    ) -> Result<(), BrokerError> {
        let limits = self.limits;
        let mut table = self.lock();
        table.purge_challenges(now);
        let own_oldest = {
            let state = table.peer(peer, &limits, now)?;
            (state.challenges.len() >= limits.challenges_per_peer.max(1))
                .then(|| state.challenges.front().cloned())
                .flatten()
        };
        if let Some(oldest) = own_oldest {
            table.remove_challenge(&oldest);
        }
        if table.challenges.len() >= limits.max_challenges.max(1)
            && let Some((_, oldest)) = table.order.first_key_value()
        {
            let oldest = oldest.clone();
            table.remove_challenge(&oldest);
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        table.order.insert(seq, id.clone());
        if let Some(state) = table.peers.get_mut(&peer) {
            state.challenges.push_back(id.clone());
        }
        table.challenges.insert(
            id,
            Challenge {
                nonce,
                tee,
                peer,
                seq,
                expires: now + self.challenge_ttl,
            },
        );
        Ok(())
    }

    /// Takes the challenge of session `id` out of the table (its nonce is spent whatever
    /// happens next): its nonce, TEE and peer.
    pub(super) fn take_challenge(
        &self,
        id: &str,
        now: Instant,
    ) -> Result<(String, String, Peer), NoChallenge> {
        let mut table = self.lock();
        if table.sessions.contains_key(id) {
            return Err(NoChallenge::Attested);
        }
        match table.remove_challenge(id) {
            None => Err(NoChallenge::Unknown),
            Some(c) if c.expires <= now => Err(NoChallenge::Expired),
            Some(c) => Ok((c.nonce, c.tee, c.peer)),
        }
    }

    /// Whether `peer` may hold one more attested session (checked before the evidence is
    /// verified, and again when the session is stored).
    pub(super) fn session_room(&self, peer: Peer, now: Instant) -> Result<(), BrokerError> {
        let mut table = self.lock();
        Self::room(&mut table, &self.limits, peer, now, self.session_ttl)
    }

    fn room(
        table: &mut Table,
        limits: &PeerLimits,
        peer: Peer,
        now: Instant,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let held = table.peers.get(&peer).map_or(0, |p| p.sessions);
        if held >= limits.sessions_per_peer || table.sessions.len() >= limits.max_sessions {
            table.purge_sessions(now);
        }
        let held = table.peers.get(&peer).map_or(0, |p| p.sessions);
        if held >= limits.sessions_per_peer {
            // Its oldest session ends at the latest one lifetime from now.
            return Err(BrokerError::TooManyRequests {
                what: format!("{peer} holds {held} attested sessions, the most one peer may hold"),
                retry_after: ttl.max(Duration::from_secs(1)),
            });
        }
        if table.sessions.len() >= limits.max_sessions {
            return Err(BrokerError::Busy(table.sessions.len()));
        }
        Ok(())
    }

    /// Stores the attested session `id` for `peer`.
    pub(super) fn attest(
        &self,
        id: &str,
        peer: Peer,
        attested: Attested,
        now: Instant,
    ) -> Result<(), BrokerError> {
        let limits = self.limits;
        let mut table = self.lock();
        Self::room(&mut table, &limits, peer, now, self.session_ttl)?;
        table.peer(peer, &limits, now)?.sessions += 1;
        table.sessions.insert(
            id.to_owned(),
            Session {
                attested: Arc::new(attested),
                peer,
                expires: now + self.session_ttl,
            },
        );
        Ok(())
    }

    /// The attested session `id`, if it is live.
    pub(super) fn attested(&self, id: &str, now: Instant) -> Result<Arc<Attested>, BrokerError> {
        let mut table = self.lock();
        match table.sessions.get(id) {
            Some(s) if s.expires <= now => {
                table.remove_session(id);
                Err(BrokerError::Session(
                    "the session expired; attest again".into(),
                ))
            }
            Some(s) => Ok(Arc::clone(&s.attested)),
            None if table.challenges.contains_key(id) => Err(BrokerError::Session(
                "the session has not attested: POST /kbs/v0/attest first".into(),
            )),
            None => Err(BrokerError::Session(
                "unknown session (never issued or expired)".into(),
            )),
        }
    }

    /// Open challenges and attested sessions held now, in all and for `peer`.
    #[cfg(test)]
    pub(super) fn counts(&self, peer: Peer) -> (usize, usize, usize, usize) {
        let table = self.lock();
        let (c, s) = table
            .peers
            .get(&peer)
            .map_or((0, 0), |p| (p.challenges.len(), p.sessions));
        (table.challenges.len(), table.sessions.len(), c, s)
    }
}
