//! Runaway guards: sessions spending or sending too fast, or sending the
//! same request body again and again.
//!
//! The accountant sees every event of a session (events are partitioned
//! by team, and a session belongs to one key), so detection lives here,
//! downstream of every gateway. A guard trips once per episode: when its
//! condition becomes true; it can trip again only after the condition was
//! false once (the rate fell, or a different body broke the run). A trip
//! raises one alert (its ID derived from the guard, the session and the
//! tripping event, so a re-fold after a crash raises the same ID, which the
//! notifier drops) and, for a guard with `block = true`, a `blocked`
//! record on the budgets topic, which gateways follow and refuse the
//! session on until a `resumed` record (`POST /v1/sessions/{id}/resume`).
//!
//! Only admitted requests count (a refused request has no `origin`): a
//! blocked session's refused retries neither extend its run nor trip again.
//! Memory is bounded: fixed state per session, at most [`MAX_SESSIONS`]
//! sessions, idle ones ([`IDLE`]) dropped first. The state is in memory
//! only: after an accountant restart, runs and rates start from the
//! events it folds next.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::ledger::{Alert, GuardTrip};
use crate::budget::{GuardKind, GuardSpec, SessionBlock};
use crate::event::LlmEvent;
use crate::metrics::METRICS;

/// Most sessions tracked at once.
pub const MAX_SESSIONS: usize = 50_000;
/// A session with no event for this long is dropped first when full.
const IDLE: Duration = Duration::hours(1);
/// Rate windows: six buckets of ten seconds make the last minute.
const BUCKET_SECS: i64 = 10;
const BUCKETS: usize = 6;

/// One ten-second slice of a session's traffic.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: i64,
    usd: Decimal,
    requests: u32,
}

/// What is kept per session: fixed size whatever it sends.
#[derive(Debug, Clone)]
struct Track {
    digest: Option<String>,
    run: u32,
    buckets: [Bucket; BUCKETS],
    /// Per guard: its condition held at the last event (an episode).
    active: Vec<bool>,
    last_at: DateTime<Utc>,
}

impl Track {
    /// A session first seen at `at`, watched by `guards` guards.
    fn new(guards: usize, at: DateTime<Utc>) -> Track {
        Track {
            digest: None,
            run: 0,
            buckets: [Bucket::default(); BUCKETS],
            active: vec![false; guards],
            last_at: at,
        }
    }

    /// Adds one event; returns `(usd, requests)` of the last minute.
    fn add(&mut self, at: DateTime<Utc>, digest: Option<&str>, usd: Decimal) -> (Decimal, u32) {
        self.run = match (digest, self.digest.as_deref()) {
            (Some(d), Some(last)) if d == last => self.run.saturating_add(1),
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        self.digest = digest.map(str::to_owned);
        self.last_at = self.last_at.max(at);
        let slot = at.timestamp().div_euclid(BUCKET_SECS);
        let b = &mut self.buckets[slot.rem_euclid(BUCKETS as i64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b.usd += usd;
        b.requests = b.requests.saturating_add(1);
        self.buckets
            .iter()
            .filter(|b| b.slot > slot - BUCKETS as i64 && b.slot <= slot)
            .fold((Decimal::ZERO, 0), |(u, r), b| (u + b.usd, r + b.requests))
    }
}

/// A guard that tripped: the alert to raise and, if it blocks, the block.
#[derive(Debug, Clone)]
pub struct Trip {
    pub alert: Alert,
    pub block: Option<SessionBlock>,
}

/// Every session's guard state.
pub struct Guards {
    specs: Vec<GuardSpec>,
    sessions: HashMap<(String, String), Track>,
}

impl Guards {
    /// Watches sessions with `specs` (none: watches nothing).
    pub fn new(specs: Vec<GuardSpec>) -> Guards {
        Guards {
            specs,
            sessions: HashMap::new(),
        }
    }

    /// Sessions tracked now (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.sessions.len()
    }

    /// Folds one costed event costing `usd`; returns the guards it trips.
    pub fn observe(&mut self, event: &LlmEvent, usd: Decimal) -> Vec<Trip> {
        if self.specs.is_empty() || event.origin.is_none() {
            return Vec::new();
        }
        let Some(session) = event.session_id.as_deref() else {
            return Vec::new();
        };
        let slot = (event.key_id.clone(), session.to_owned());
        if !self.sessions.contains_key(&slot) {
            self.make_room(event.started_at);
        }
        let guards = self.specs.len();
        let track = self
            .sessions
            .entry(slot)
            .or_insert_with(|| Track::new(guards, event.started_at));
        let (minute_usd, minute_requests) =
            track.add(event.started_at, event.body_digest.as_deref(), usd);
        let mut trips = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let reason = condition(spec, track.run, minute_usd, minute_requests);
            let was = std::mem::replace(&mut track.active[i], reason.is_some());
            if let (Some(reason), false) = (reason, was) {
                trips.push(trip(spec, event, session, reason));
            }
        }
        trips
    }

    /// Keeps the map under [`MAX_SESSIONS`]: idle sessions go first, then
    /// the least recently active.
    fn make_room(&mut self, now: DateTime<Utc>) {
        if self.sessions.len() < MAX_SESSIONS {
            return;
        }
        self.sessions.retain(|_, t| t.last_at + IDLE > now);
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, t)| t.last_at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.sessions.remove(&k),
                None => break,
            };
        }
    }
}

/// Why `spec` holds now, or `None`.
fn condition(spec: &GuardSpec, run: u32, usd: Decimal, requests: u32) -> Option<String> {
    match spec.kind {
        GuardKind::Repeat if run >= spec.same_body => {
            Some(format!("the same request body {run} times in a row"))
        }
        GuardKind::Repeat => None,
        GuardKind::SessionRate => {
            let over_usd = spec.usd_per_minute.filter(|limit| usd > *limit);
            let over_requests = spec.requests_per_minute.filter(|limit| requests > *limit);
            match (over_usd, over_requests) {
                (Some(limit), _) => Some(format!(
                    "${} spent in the last minute (limit ${limit} per minute)",
                    usd.round_dp(4)
                )),
                (None, Some(limit)) => Some(format!(
                    "{requests} requests in the last minute (limit {limit} per minute)"
                )),
                (None, None) => None,
            }
        }
    }
}

/// The alert (and block) of `spec` tripping on `event`.
fn trip(spec: &GuardSpec, event: &LlmEvent, session: &str, reason: String) -> Trip {
    METRICS.guard_trips.with_label_values(&[&spec.name]).inc();
    let episode = hex::encode(
        &Sha256::digest(format!(
            "guard|{}|{}|{session}|{}",
            spec.name, event.key_id, event.event_id
        ))[..16],
    );
    let alert = Alert {
        alert_id: episode.clone(),
        budget: spec.name.clone(),
        subject: format!("{}/{session}", event.key_id),
        period_start: event.started_at,
        period_end: None,
        threshold: 0,
        spent_usd: Decimal::ZERO,
        limit_usd: spec.usd_per_minute,
        spent_tokens: 0,
        limit_tokens: None,
        crossed_at: event.started_at,
        guard: Some(GuardTrip {
            key_id: event.key_id.clone(),
            session: session.to_owned(),
            reason: reason.clone(),
            blocked: spec.block,
        }),
    };
    let block = spec.block.then(|| SessionBlock {
        key_id: event.key_id.clone(),
        session: session.to_owned(),
        guard: spec.name.clone(),
        episode,
        reason,
        at: event.started_at,
    });
    Trip { alert, block }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    fn repeat(n: u32) -> GuardSpec {
        GuardSpec {
            name: "loop".into(),
            kind: GuardKind::Repeat,
            usd_per_minute: None,
            requests_per_minute: None,
            same_body: n,
            block: true,
        }
    }

    fn rate(usd: i64) -> GuardSpec {
        GuardSpec {
            name: "burn".into(),
            kind: GuardKind::SessionRate,
            usd_per_minute: Some(Decimal::from(usd)),
            requests_per_minute: None,
            same_body: 0,
            block: false,
        }
    }

    fn event(session: &str, digest: &str, secs: i64) -> LlmEvent {
        let mut e = crate::event::tests::sample_event();
        e.event_id = uuid::Uuid::now_v7();
        e.session_id = Some(session.into());
        e.body_digest = Some(digest.into());
        e.started_at = DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_000_000 + secs);
        e.origin = Some(Origin {
            gateway: "g".into(),
            seq: 1,
        });
        e
    }

    #[test]
    fn the_same_body_n_times_trips_once_per_run_and_blocks() {
        let mut g = Guards::new(vec![repeat(3)]);
        let mut trips = Vec::new();
        for i in 0..10 {
            trips.extend(g.observe(&event("s", "d1", i), Decimal::ONE));
        }
        assert_eq!(trips.len(), 1, "one alert per run");
        let block = trips[0].block.as_ref().unwrap();
        assert_eq!(block.session, "s");
        assert_eq!(block.episode, trips[0].alert.alert_id);
        assert!(
            trips[0]
                .alert
                .guard
                .as_ref()
                .unwrap()
                .reason
                .contains("3 times")
        );
        // A different body ends the run; a new run of three trips again.
        assert!(g.observe(&event("s", "d2", 20), Decimal::ONE).is_empty());
        let again: Vec<Trip> = (0..2)
            .flat_map(|i| g.observe(&event("s", "d2", 21 + i), Decimal::ONE))
            .collect();
        assert_eq!(again.len(), 1);
        // Other sessions are their own; refused requests (no origin) do
        // not count.
        let mut refused = event("t", "d1", 30);
        refused.origin = None;
        for _ in 0..5 {
            assert!(g.observe(&refused, Decimal::ONE).is_empty());
        }
        assert_eq!(g.tracked(), 1);
    }

    #[test]
    fn spend_per_minute_trips_when_the_last_minute_passes_the_limit() {
        let mut g = Guards::new(vec![rate(2)]);
        let usd = Decimal::new(5, 1); // $0.50 per request
        let trips: Vec<Trip> = (0..5)
            .flat_map(|i| g.observe(&event("s", &format!("d{i}"), i * 5), usd))
            .collect();
        assert_eq!(trips.len(), 1, "the 5th request makes $2.50 in 25 s");
        assert!(trips[0].block.is_none(), "block = false only alerts");
        // Two minutes later the rate is back under: a new burst trips again.
        let later: Vec<Trip> = (0..5)
            .flat_map(|i| g.observe(&event("s", &format!("e{i}"), 200 + i), usd))
            .collect();
        assert_eq!(later.len(), 1);
    }

    #[test]
    fn tracked_sessions_stay_bounded() {
        let mut g = Guards::new(vec![repeat(3)]);
        for i in 0..(MAX_SESSIONS + 10) {
            g.observe(&event(&format!("s{i}"), "d", 0), Decimal::ZERO);
        }
        assert!(g.tracked() <= MAX_SESSIONS);
    }
}
