//! Admission: rate limits and budgets, decided before a request is sent.
//!
//! Budgets are reserve-then-settle. Admitting a request reserves its worst
//! case against every budget covering it: estimated input tokens (the body's
//! byte count, a free upper bound; near a limit, tiktoken's count times the
//! safety factor, counted by [`super::tokens`]) priced at the model's
//! dearest input rate (the 1-hour cache write), plus `max_tokens` of output. When the request ends, the
//! reservation shrinks to the real cost; it is released once the budget state
//! from the accountant shows the event folded in (the `progress` record),
//! so a request's cost is always counted once: reserved, or spent. Checks
//! and reservations happen under one lock that is never held across an
//! await, so concurrent requests cannot all squeeze into the same room.
//!
//! A budget with `output_estimate = "observed"` reserves, instead of all
//! of `max_tokens`, what the key's requests to the model really produced
//! lately ([`super::observed`]). Session and agent budgets take the
//! session and agent from Claude Code's headers ([`SessionOf`]).
//!
//! Runaway guards: the accountant blocks a session (a `blocked` record on
//! the budgets topic) and a person resumes it (a `resumed` record); this
//! gateway folds both and refuses a blocked session's requests.
//!
//! Subscription passthrough requests are billed by Anthropic to the client:
//! they reserve and count no USD (a USD budget neither holds them back nor
//! is used up by them), while token budgets and rate limits apply as to
//! any request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::auth::Identity;
use super::observed::ObservedOutputs;
use super::plan::WorstCase;
use super::tokens::TokenCounter;
use crate::budget::{BudgetRecord, BudgetSpec, BudgetStates, LedgerId, SessionBlock, Who};
use crate::config::{
    AdmissionConfig, BudgetScope, OutputEstimate, RateLimitConfig, UnknownStatePolicy,
};
use crate::event::Usage;
use crate::metrics::METRICS;
use crate::pricing::cost::quote;
use crate::pricing::{PriceQuery, SharedBook};

pub use super::error::Refusal;

/// The Claude Code session and agent a request belongs to, from its
/// headers (session and agent budgets, guard blocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOf<'a> {
    pub session: Option<&'a str>,
    pub agent: Option<&'a str>,
}

impl<'a> SessionOf<'a> {
    /// Reads `x-claude-code-session-id` and `x-claude-code-agent-id`.
    pub fn from_headers(headers: &'a http::HeaderMap) -> SessionOf<'a> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        SessionOf {
            session: text("x-claude-code-session-id"),
            agent: text("x-claude-code-agent-id"),
        }
    }
}

/// Most session blocks a gateway keeps: resumed ones go first, then the
/// oldest (a client tripping guards in many sessions cannot grow it).
const MAX_BLOCKS: usize = 100_000;

/// A session's latest guard record.
struct BlockState {
    block: SessionBlock,
    resumed: bool,
}

/// A request's reservation; settle it with the real usage when the
/// request ends. Dropped unsettled, it is released.
pub struct Ticket {
    admission: Arc<Admission>,
    seq: u64,
    team: String,
    done: bool,
    /// Whether the request's cost is spend (false on passthrough: the
    /// client's subscription pays, so nothing is reserved in USD).
    spends_usd: bool,
    /// The key and requested model, for the observed-output samples.
    key_id: String,
    model: Option<String>,
}

impl Ticket {
    /// The sequence number for the event's `origin`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Shrinks the reservation to what the request really used; it stays
    /// until the accountant's state includes the event.
    pub fn settle(mut self, provider: &str, model: Option<&str>, usage: &Usage) {
        self.done = true;
        let usd = if self.spends_usd {
            self.admission.actual_usd(provider, model, usage)
        } else {
            Decimal::ZERO
        };
        let tokens = usage.total_tokens();
        if self.admission.observes
            && usage.output_tokens > 0
            && let Some(model) = self.model.as_deref()
        {
            self.admission
                .observed
                .record(&self.key_id, model, usage.output_tokens);
        }
        let mut state = self.admission.lock();
        if let Some(r) = state.reservations.get_mut(&self.seq) {
            for (_, reserved_usd, reserved_tokens) in r.ledgers.iter_mut() {
                *reserved_usd = usd;
                *reserved_tokens = tokens;
            }
            r.settled = true;
        }
        // Folded already (the state overtook us)?
        if state.folded.get(&self.team).is_some_and(|f| *f >= self.seq) {
            state.reservations.remove(&self.seq);
        }
        state.report();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.admission.lock();
            state.reservations.remove(&self.seq);
            state.report();
        }
    }
}

/// What is reserved for one request, per ledger.
struct Reservation {
    team: String,
    ledgers: Vec<(LedgerId, Decimal, u64)>,
    /// The request ended; waiting for its event to be folded.
    settled: bool,
}

/// Budget state as this gateway knows it, plus its own reservations.
#[derive(Default)]
struct State {
    states: BudgetStates,
    /// True once the budgets topic has been read to its end.
    caught_up: bool,
    reservations: HashMap<u64, Reservation>,
    /// This gateway's events folded by the accountant, per team.
    folded: HashMap<String, u64>,
    /// Guard records per (key, session).
    blocks: HashMap<(String, String), BlockState>,
}

impl State {
    fn reserved(&self, id: &LedgerId) -> (Decimal, u64) {
        let mut usd = Decimal::ZERO;
        let mut tokens = 0;
        for r in self.reservations.values() {
            for (lid, u, t) in &r.ledgers {
                if lid == id {
                    usd += *u;
                    tokens += *t;
                }
            }
        }
        (usd, tokens)
    }

    /// What the requests that ended but are not yet in the state really
    /// cost on `id`: spend the accountant has not folded in yet.
    fn ended_unfolded(&self, id: &LedgerId) -> (Decimal, u64) {
        let mut usd = Decimal::ZERO;
        let mut tokens = 0;
        for r in self.reservations.values().filter(|r| r.settled) {
            for (lid, u, t) in &r.ledgers {
                if lid == id {
                    usd += *u;
                    tokens += *t;
                }
            }
        }
        (usd, tokens)
    }

    /// Takes a guard's block or a person's resume of one session. A block
    /// of a trip already resumed (re-published after an accountant
    /// restart) stays resumed.
    fn apply_block(&mut self, block: SessionBlock, resumed: bool) {
        let slot = (block.key_id.clone(), block.session.clone());
        let repeat = self
            .blocks
            .get(&slot)
            .is_some_and(|b| b.resumed && b.block.episode == block.episode);
        if !resumed && repeat {
            return;
        }
        self.blocks.insert(slot, BlockState { block, resumed });
        if self.blocks.len() > MAX_BLOCKS {
            self.blocks.retain(|_, b| !b.resumed);
        }
        while self.blocks.len() > MAX_BLOCKS {
            let oldest = self
                .blocks
                .iter()
                .min_by_key(|(_, b)| b.block.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.blocks.remove(&k),
                None => break,
            };
        }
    }

    fn report(&self) {
        let total: Decimal = self
            .reservations
            .values()
            .flat_map(|r| r.ledgers.iter().map(|l| l.1))
            .sum();
        METRICS.reserved_usd.set(total.to_f64().unwrap_or(0.0));
    }
}

/// Where a caller stands against one budget (see [`Admission::standings`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStanding {
    pub budget: String,
    pub subject: String,
    pub period: crate::config::BudgetPeriod,
    /// Spent (in flight not counted) as a fraction of the limit (the
    /// larger of the USD and token fractions when the budget has both);
    /// above 1 once over.
    pub utilisation: f64,
    /// USD spent in this period (in flight not counted).
    pub used_usd: Decimal,
    /// The USD limit, when the budget has one that applies to the caller.
    pub limit_usd: Option<Decimal>,
    /// When the period ends; `None` for a `total` budget.
    pub resets_at: Option<DateTime<Utc>>,
}

/// `used / limit` as a float; a zero limit is used up at once.
fn fraction(used: Decimal, limit: Decimal) -> f64 {
    if limit <= Decimal::ZERO {
        return 1.0;
    }
    (used / limit).to_f64().unwrap_or(1.0)
}

/// One configured rate limit with its limiters.
struct Limiter {
    /// What it was built from: an unchanged limit keeps its limiter (and
    /// what it counted) across control-plane changes.
    config: RateLimitConfig,
    scope: BudgetScope,
    subject: Option<String>,
    requests: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    tokens: Option<(u32, DefaultKeyedRateLimiter<String>)>,
}

impl Limiter {
    /// The limiters of one validated rate limit.
    fn new(l: &RateLimitConfig) -> Limiter {
        let keyed = |n: u32| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            (n.get(), RateLimiter::keyed(Quota::per_minute(n)))
        };
        Limiter {
            config: l.clone(),
            scope: l.scope,
            subject: l.subject.clone(),
            requests: l.requests_per_minute.map(keyed),
            tokens: l.tokens_per_minute.map(keyed),
        }
    }
}

/// The gateway's admission control.
pub struct Admission {
    /// This process's name on event origins (unique per start).
    gateway_id: String,
    next_seq: AtomicU64,
    /// Swapped whole by the control plane; a request decides against the
    /// specs current when it is admitted.
    specs: ArcSwap<Vec<BudgetSpec>>,
    book: SharedBook,
    config: AdmissionConfig,
    limiters: ArcSwap<Vec<Arc<Limiter>>>,
    /// Counts tokens of requests near a limit.
    counter: TokenCounter,
    state: Mutex<State>,
    /// Recent outputs per key and model, for observed estimates.
    observed: ObservedOutputs,
    /// Whether any budget estimates output from observation.
    observes: bool,
    /// Whether guards may block sessions (the budgets topic is followed
    /// even with no budget).
    guards: AtomicBool,
}

impl Admission {
    pub fn new(
        specs: Vec<BudgetSpec>,
        book: SharedBook,
        config: AdmissionConfig,
        limits: &[RateLimitConfig],
    ) -> Arc<Admission> {
        let limiters = limits.iter().map(|l| Arc::new(Limiter::new(l))).collect();
        announce_budgets(&specs);
        announce_rate_limits(limits);
        // With no budgets there is no state to wait for.
        let caught_up = specs.is_empty();
        let observes = specs
            .iter()
            .any(|s| s.output_estimate == OutputEstimate::Observed);
        Arc::new(Admission {
            gateway_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            next_seq: AtomicU64::new(1),
            specs: ArcSwap::from_pointee(specs),
            book,
            limiters: ArcSwap::from_pointee(limiters),
            counter: TokenCounter::new(
                TokenCounter::default_concurrency(),
                config.token_safety_factor,
            ),
            config,
            state: Mutex::new(State {
                caught_up,
                ..State::default()
            }),
            observed: ObservedOutputs::default(),
            observes,
            guards: AtomicBool::new(false),
        })
    }

    /// Whether any budget is configured, or a guard may block sessions
    /// (either way the state feed is needed).
    pub fn has_budgets(&self) -> bool {
        !self.specs.load().is_empty() || self.guards.load(Ordering::Relaxed)
    }

    /// Puts new budget specs in use (the control plane changed them);
    /// reservations and state already held stay.
    pub fn set_budgets(&self, specs: Vec<BudgetSpec>) {
        announce_budgets(&specs);
        self.specs.store(Arc::new(specs));
    }

    /// How many rate limits are in use (tests).
    #[cfg(test)]
    fn load_limiters_len(&self) -> usize {
        self.limiters.load().len()
    }

    /// Puts new rate limits in use; a limit that did not change keeps its
    /// limiter, so what it counted this minute still counts.
    pub fn set_rate_limits(&self, limits: &[RateLimitConfig]) {
        announce_rate_limits(limits);
        let old = self.limiters.load_full();
        let next = limits
            .iter()
            .map(|l| match old.iter().find(|o| o.config == *l) {
                Some(same) => same.clone(),
                None => Arc::new(Limiter::new(l)),
            })
            .collect();
        self.limiters.store(Arc::new(next));
    }

    /// Guards that block are configured: follow the budgets topic for
    /// their blocks even without budgets.
    pub fn follow_guards(&self, blocking: bool) {
        self.guards.store(blocking, Ordering::Relaxed);
    }

    /// The guard blocks in force on `session` (one per key that sent it),
    /// for `POST /v1/sessions/{id}/resume`.
    pub fn blocks_of(&self, session: &str) -> Vec<SessionBlock> {
        let state = self.lock();
        let mut out: Vec<SessionBlock> = state
            .blocks
            .values()
            .filter(|b| !b.resumed && b.block.session == session)
            .map(|b| b.block.clone())
            .collect();
        out.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        out
    }

    /// The block in force on `who`'s `session`, as a refusal.
    fn check_blocked(&self, who: &Identity, session: SessionOf<'_>) -> Result<(), Refusal> {
        let Some(id) = session.session else {
            return Ok(());
        };
        let state = self.lock();
        if state.blocks.is_empty() {
            return Ok(());
        }
        // Named as the event (and so the guard's block) names it.
        let slot = (
            who.key_id.clone(),
            crate::budget::as_recorded(id).into_owned(),
        );
        match state.blocks.get(&slot).filter(|b| !b.resumed) {
            Some(b) => {
                METRICS
                    .guard_refusals
                    .with_label_values(&[&b.block.guard])
                    .inc();
                Err(Refusal::Guard {
                    guard: b.block.guard.clone(),
                    session: b.block.session.clone(),
                    reason: b.block.reason.clone(),
                })
            }
            None => Ok(()),
        }
    }

    /// The price tables admission prices with now (they may be reloaded).
    pub fn price_book(&self) -> Arc<crate::pricing::PriceBook> {
        self.book.current()
    }

    /// This gateway's ID on event origins.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one record of the budgets topic.
    pub fn apply(&self, record: BudgetRecord) {
        let mut state = self.lock();
        match record {
            BudgetRecord::State(s) => state.states.apply(s),
            BudgetRecord::Forgotten(f) => state.states.forget(&f),
            BudgetRecord::Blocked(b) => state.apply_block(b, false),
            BudgetRecord::Resumed(b) => state.apply_block(b, true),
            BudgetRecord::Progress(p) => {
                let prefix = format!("{}|", self.gateway_id);
                let mut released = false;
                for (key, seq) in &p.folded {
                    let Some(team) = key.strip_prefix(&prefix) else {
                        continue;
                    };
                    let f = state.folded.entry(team.to_owned()).or_default();
                    *f = (*f).max(*seq);
                    let upto = *f;
                    let before = state.reservations.len();
                    state
                        .reservations
                        .retain(|seq, r| !(r.settled && r.team == team && *seq <= upto));
                    released |= state.reservations.len() != before;
                }
                if released {
                    state.report();
                }
            }
        }
    }

    /// The budgets topic has been read to its end: decisions can be exact.
    pub fn caught_up(&self) {
        self.lock().caught_up = true;
        tracing::info!("budget state read; admission is exact from here");
    }

    /// Every ledger's totals and what in-flight requests hold on it (USD,
    /// tokens), for the API.
    pub fn ledgers(&self) -> Vec<(LedgerId, crate::budget::LedgerTotal, (Decimal, u64))> {
        let state = self.lock();
        state
            .states
            .all()
            .into_iter()
            .map(|(id, total)| {
                let reserved = state.reserved(&id);
                (id, total, reserved)
            })
            .collect()
    }

    /// Admits or refuses one request. `body` is the request as sent;
    /// `at` is the request's time (it picks the budget period).
    pub async fn admit(
        self: &Arc<Self>,
        who: &Identity,
        session: SessionOf<'_>,
        ask: &WorstCase,
        at: DateTime<Utc>,
    ) -> Result<Ticket, Refusal> {
        let body = &ask.body;
        self.check_blocked(who, session)?;
        self.check_rate_limits(who, body.len() as u64, ask.max_tokens)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            admission: self.clone(),
            seq,
            team: who.team.clone(),
            done: false,
            spends_usd: !who.passthrough,
            key_id: who.key_id.clone(),
            model: ask.model.clone(),
        };
        let specs = self.specs.load_full();
        let covering = self.covering(&specs, who, session, at);
        if covering.is_empty() {
            return Ok(ticket);
        }
        // A free upper bound first: input tokens ≤ body bytes.
        let bound = body.len() as u64;
        match self.try_reserve(&ticket, &covering, ask, bound) {
            Ok(()) => return Ok(ticket),
            Err(Refusal::StateUnknown) => return Err(Refusal::StateUnknown),
            Err(_) => {}
        }
        // Near a limit: count tokens properly (off the async threads, a
        // bounded number at a time; busy counters keep the byte bound).
        let counted = self.counter.upper_bound(body).await.unwrap_or(bound);
        self.try_reserve(&ticket, &covering, ask, counted.min(bound))?;
        Ok(ticket)
    }

    /// Every budget covering `who` at `at`: the spec, its ledger for the
    /// period holding `at`, and when that period ends.
    fn covering<'a>(
        &self,
        specs: &'a [BudgetSpec],
        who: &Identity,
        session: SessionOf<'_>,
        at: DateTime<Utc>,
    ) -> Vec<(&'a BudgetSpec, LedgerId, Option<DateTime<Utc>>)> {
        let w = Who {
            key_id: &who.key_id,
            user: &who.user,
            team: &who.team,
            workspace: &who.workspace,
            session: session.session,
            agent: session.agent,
        };
        specs
            .iter()
            .filter_map(|spec| {
                let subject = spec.subject_of(w)?;
                let (period_start, end) = spec.period_of(at);
                Some((
                    spec,
                    LedgerId {
                        budget: spec.name.clone(),
                        subject,
                        period_start,
                    },
                    end,
                ))
            })
            .collect()
    }

    /// Read-only: where `who` stands against every budget covering a
    /// request at `at`, for Claude Code's usage-limit headers and
    /// `/api/oauth/usage`: what was really spent (folded, plus requests
    /// that ended and await folding) against the limit. Worst-case
    /// reservations of requests still in flight are left out: a Claude
    /// Code request reserves ~$1.5 (88 KB body, 64k `max_tokens`), which
    /// would show a $5 cap 30 % used before anything was spent. Reserves
    /// nothing and decides nothing; admission alone refuses. USD limits
    /// count only for requests that spend USD (not passthrough).
    pub fn standings(
        &self,
        who: &Identity,
        session: SessionOf<'_>,
        at: DateTime<Utc>,
    ) -> Vec<BudgetStanding> {
        let specs = self.specs.load_full();
        let covering = self.covering(&specs, who, session, at);
        let state = self.lock();
        covering
            .into_iter()
            .filter_map(|(spec, id, resets_at)| {
                let spent = state.states.total(&id);
                let (ended_usd, ended_tokens) = state.ended_unfolded(&id);
                let used_usd = spent.spent_usd + ended_usd;
                let used_tokens = spent.spent_tokens + ended_tokens;
                let limit_usd = spec.limit_usd.filter(|_| !who.passthrough);
                let usd = limit_usd.map(|l| fraction(used_usd, l));
                let tokens = spec
                    .limit_tokens
                    .map(|l| fraction(Decimal::from(used_tokens), Decimal::from(l)));
                let utilisation = usd.into_iter().chain(tokens).reduce(f64::max)?;
                Some(BudgetStanding {
                    budget: spec.name.clone(),
                    subject: id.subject,
                    period: spec.period,
                    utilisation,
                    used_usd,
                    limit_usd,
                    resets_at,
                })
            })
            .collect()
    }

    /// The tightest budget covering `who` at `at`: the one used furthest
    /// towards its limit ([`Admission::standings`]).
    pub fn tightest_budget(
        &self,
        who: &Identity,
        session: SessionOf<'_>,
        at: DateTime<Utc>,
    ) -> Option<BudgetStanding> {
        self.standings(who, session, at)
            .into_iter()
            .max_by(|a, b| a.utilisation.total_cmp(&b.utilisation))
    }

    /// Checks every covering ledger under the lock and reserves on all of
    /// them, or refuses naming the first that would be exceeded.
    fn try_reserve(
        &self,
        ticket: &Ticket,
        covering: &[(&BudgetSpec, LedgerId, Option<DateTime<Utc>>)],
        ask: &WorstCase,
        input: u64,
    ) -> Result<(), Refusal> {
        let asks = self.asks(ticket, covering, ask, input);
        let mut state = self.lock();
        if !state.caught_up && self.config.on_unknown_state == UnknownStatePolicy::Closed {
            return Err(Refusal::StateUnknown);
        }
        for ((spec, id, end), (usd, tokens)) in covering.iter().zip(&asks) {
            let (usd, tokens) = (*usd, *tokens);
            let spent = state.states.total(id);
            let (reserved_usd, reserved_tokens) = state.reserved(id);
            let resets = end
                .map(|e| {
                    format!(
                        "; resets {}",
                        e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default();
            // Counted here, where the refusal is decided, once per refusal.
            let refuse = |spent: String, limit: String| {
                METRICS
                    .budget_refusals
                    .with_label_values(&[&spec.name])
                    .inc();
                Refusal::Budget {
                    budget: spec.name.clone(),
                    subject: id.subject.clone(),
                    spent,
                    limit,
                    resets: resets.clone(),
                }
            };
            if let Some(limit) = spec.limit_usd.filter(|_| ticket.spends_usd)
                && spent.spent_usd + reserved_usd + usd > limit
            {
                let spent = format!("${}", spent.spent_usd.round_dp(4));
                return Err(refuse(spent, format!("${limit}")));
            }
            if let Some(limit) = spec.limit_tokens
                && spent.spent_tokens + reserved_tokens + tokens > limit
            {
                let spent = format!("{} tokens", spent.spent_tokens);
                return Err(refuse(spent, format!("{limit} tokens")));
            }
        }
        let ledgers = covering
            .iter()
            .zip(asks)
            .map(|((_, id, _), (usd, tokens))| (id.clone(), usd, tokens))
            .collect();
        state.reservations.insert(
            ticket.seq,
            Reservation {
                team: ticket.team.clone(),
                ledgers,
                settled: false,
            },
        );
        state.report();
        Ok(())
    }

    /// What to reserve on each covering budget, `(usd, tokens)` in
    /// `covering`'s order: `max_tokens` of output, or for an observed
    /// budget the key's observed output for the model (at most
    /// `max_tokens`). Priced before the lock is taken.
    fn asks(
        &self,
        ticket: &Ticket,
        covering: &[(&BudgetSpec, LedgerId, Option<DateTime<Utc>>)],
        ask: &WorstCase,
        input: u64,
    ) -> Vec<(Decimal, u64)> {
        let model = ask.model.as_deref();
        let price = |output: u64| {
            let usd = if ticket.spends_usd {
                self.worst_case_usd(model, input, output, &ask.billing)
            } else {
                Decimal::ZERO
            };
            (usd, input + output)
        };
        let worst = price(ask.max_tokens);
        let mut observed = None;
        covering
            .iter()
            .map(|(spec, _, _)| match spec.output_estimate {
                OutputEstimate::MaxTokens => worst,
                OutputEstimate::Observed => *observed.get_or_insert_with(|| {
                    let key = &ticket.key_id;
                    let out = self
                        .observed
                        .estimate(key, model.unwrap_or(""), ask.max_tokens);
                    price(out)
                }),
            })
            .collect()
    }

    /// The most a request can cost: every input token at the dearest input
    /// rate (the 1-hour cache write), `max_tokens` of output. A model no
    /// table has is priced as the accountant will price it (provisionally:
    /// its line's latest entry, else the unknown-model rates), never at $0.
    /// `billing` carries what the request asked that changes the rates
    /// (fast mode, US-only inference).
    pub fn worst_case_usd(
        &self,
        model: Option<&str>,
        input: u64,
        max_tokens: u64,
        billing: &Usage,
    ) -> Decimal {
        let usage = Usage {
            cache_creation_1h_tokens: input,
            output_tokens: max_tokens,
            speed: billing.speed.clone(),
            inference_geo: billing.inference_geo.clone(),
            ..Usage::default()
        };
        self.actual_usd("anthropic", model, &usage)
    }

    fn actual_usd(&self, provider: &str, model: Option<&str>, usage: &Usage) -> Decimal {
        let provider = if provider.is_empty() {
            "anthropic"
        } else {
            provider
        };
        let q = PriceQuery {
            provider,
            model: model.unwrap_or(""),
            region: None,
            at: Utc::now(),
        };
        quote(&self.book.current(), &q, usage).lines.total_usd
    }

    /// Requests and tokens per minute; tokens are estimated as body bytes
    /// / 4 plus `max_tokens` (no tokenizer on this path).
    fn check_rate_limits(
        &self,
        who: &Identity,
        body_bytes: u64,
        max_tokens: u64,
    ) -> Result<(), Refusal> {
        let limiters = self.limiters.load();
        for l in limiters.iter() {
            let scope = limit_scope_label(l.scope);
            let subject = match l.scope {
                BudgetScope::Key => &who.key_id,
                BudgetScope::User => &who.user,
                _ => &who.team,
            };
            if l.subject.as_ref().is_some_and(|s| s != subject) {
                continue;
            }
            let refuse = |limit: String, wait: Duration, kind: &str| {
                METRICS
                    .rate_limit_refusals
                    .with_label_values(&[scope, kind])
                    .inc();
                Refusal::RateLimited {
                    scope,
                    subject: subject.clone(),
                    limit,
                    retry_after_secs: wait.as_secs_f64().ceil().clamp(1.0, 60.0) as u64,
                }
            };
            if let Some((n, limiter)) = &l.requests
                && let Err(not_until) = limiter.check_key(subject)
            {
                return Err(refuse(
                    format!("{n} requests per minute"),
                    not_until.wait_time_from(limiter.clock().now()),
                    "requests",
                ));
            }
            if let Some((n, limiter)) = &l.tokens {
                let want = (body_bytes / 4 + max_tokens).clamp(1, *n as u64) as u32;
                let want = NonZeroU32::new(want).expect("at least 1");
                match limiter.check_key_n(subject, want) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => {
                        return Err(refuse(
                            format!("{n} tokens per minute"),
                            not_until.wait_time_from(limiter.clock().now()),
                            "tokens",
                        ));
                    }
                    Err(_) => {
                        return Err(refuse(
                            format!("{n} tokens per minute"),
                            Duration::from_secs(60),
                            "tokens",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `scope` label of a rate limit's refusals: key and user limits by
/// name, everything else counted per team.
fn limit_scope_label(scope: BudgetScope) -> &'static str {
    match scope {
        BudgetScope::Key => "key",
        BudgetScope::User => "user",
        _ => "team",
    }
}

/// Gives each budget its refusal series at 0, so a dashboard shows zero
/// refusals rather than "No data" before the first one.
fn announce_budgets(specs: &[BudgetSpec]) {
    for spec in specs {
        METRICS.budget_refusals.with_label_values(&[&spec.name]);
    }
}

/// Gives each rate limit its refusal series (per scope and kind) at 0.
fn announce_rate_limits(limits: &[RateLimitConfig]) {
    for limit in limits {
        let scope = limit_scope_label(limit.scope);
        if limit.requests_per_minute.is_some() {
            METRICS
                .rate_limit_refusals
                .with_label_values(&[scope, "requests"]);
        }
        if limit.tokens_per_minute.is_some() {
            METRICS
                .rate_limit_refusals
                .with_label_values(&[scope, "tokens"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::LedgerState;
    use crate::config::BudgetConfig;

    #[test]
    fn fast_mode_and_us_only_requests_are_reserved_at_their_dearer_rates() {
        let a = admission("budgets = []");
        let price = |billing: Usage| a.worst_case_usd(Some("claude-opus-5"), 1000, 1000, &billing);
        let standard = price(Usage::default());
        let fast = price(Usage {
            speed: Some("fast".into()),
            ..Usage::default()
        });
        let us_only = price(Usage {
            inference_geo: Some("us".into()),
            ..Usage::default()
        });
        assert!(standard > Decimal::ZERO);
        assert_eq!(
            fast,
            standard * Decimal::from(2),
            "fast Opus 5 is $10/$50 against $5/$25"
        );
        assert_eq!(us_only, standard * Decimal::new(11, 1));
    }

    fn admission(budgets: &str) -> Arc<Admission> {
        #[derive(serde::Deserialize)]
        struct File {
            budgets: Vec<BudgetConfig>,
        }
        let file: File = toml::from_str(budgets).unwrap();
        let specs = BudgetSpec::from_config(&file.budgets).unwrap();
        let a = Admission::new(
            specs,
            SharedBook::new(crate::pricing::PriceBook::embedded()),
            AdmissionConfig::default(),
            &[],
        );
        a.caught_up();
        a
    }

    #[test]
    fn swapped_rate_limits_keep_what_unchanged_limits_counted_and_apply_new_ones() {
        let a = admission("budgets = []");
        let limit = |rpm| RateLimitConfig {
            scope: BudgetScope::Team,
            subject: Some("eng".into()),
            requests_per_minute: Some(rpm),
            tokens_per_minute: None,
        };
        a.set_rate_limits(&[limit(1)]);
        assert!(a.check_rate_limits(&alice(), 10, 10).is_ok());
        // The same limit again: its minute's count stays, so it refuses.
        a.set_rate_limits(&[limit(1)]);
        assert!(a.check_rate_limits(&alice(), 10, 10).is_err());
        // A raised limit is a new limiter.
        a.set_rate_limits(&[limit(100)]);
        assert!(a.check_rate_limits(&alice(), 10, 10).is_ok());
        a.set_rate_limits(&[]);
        assert_eq!(a.load_limiters_len(), 0);
    }

    fn alice() -> Identity {
        Identity {
            key_id: "key_alice".into(),
            workspace: "acme".into(),
            team: "eng".into(),
            user: "alice".into(),
            provider: "anthropic".into(),
            route: None,
            passthrough: false,
            client_routing: Default::default(),
        }
    }

    fn spent(a: &Admission, budget: &str, subject: &str, at: DateTime<Utc>, usd: &str) {
        let spec = a
            .specs
            .load_full()
            .iter()
            .find(|s| s.name == budget)
            .unwrap()
            .clone();
        let (period_start, period_end) = spec.period_of(at);
        a.apply(BudgetRecord::State(LedgerState {
            id: LedgerId {
                budget: budget.into(),
                subject: subject.into(),
                period_start,
            },
            period_end,
            partition: 0,
            through_offset: 1,
            spent_usd: usd.parse().unwrap(),
            spent_tokens: 0,
            limit_usd: None,
            limit_tokens: None,
            alerted: Vec::new(),
            owner: None,
            last_at: None,
        }));
    }

    #[test]
    fn the_tightest_budget_is_the_one_used_furthest_and_nothing_is_reserved() {
        let a = admission(
            r#"
[[budgets]]
name = "team-month"
scope = "team"
period = "monthly"
limit_usd = "100"
[[budgets]]
name = "alice-day"
scope = "user"
subject = "alice"
period = "daily"
limit_usd = "10"
[[budgets]]
name = "bob-day"
scope = "user"
subject = "bob"
period = "daily"
limit_usd = "1"
"#,
        );
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        spent(&a, "team-month", "eng", at, "50");
        spent(&a, "alice-day", "alice", at, "8.1");
        let standings = a.standings(&alice(), SessionOf::default(), at);
        assert_eq!(standings.len(), 2, "bob's budget does not cover alice");
        let tight = a
            .tightest_budget(&alice(), SessionOf::default(), at)
            .unwrap();
        assert_eq!(tight.budget, "alice-day");
        assert!((tight.utilisation - 0.81).abs() < 1e-9, "{tight:?}");
        assert_eq!(
            tight.resets_at,
            Some("2026-12-02T00:00:00Z".parse().unwrap())
        );
        assert_eq!(tight.limit_usd, Some(Decimal::from(10)));
        assert!(a.lock().reservations.is_empty(), "reading reserves nothing");
    }

    #[tokio::test]
    async fn requests_in_flight_do_not_count_until_they_end_with_their_real_cost() {
        let a = admission(
            r#"
[[budgets]]
name = "alice-day"
scope = "user"
subject = "alice"
period = "daily"
limit_usd = "10"
"#,
        );
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        spent(&a, "alice-day", "alice", at, "8");
        let body = bytes::Bytes::from_static(b"{\"model\":\"claude-sonnet-4-5\"}");
        let ask = WorstCase {
            model: Some("claude-sonnet-4-5".into()),
            max_tokens: 1000,
            body: body.clone(),
            billing: Usage::default(),
        };
        let ticket = a
            .admit(&alice(), SessionOf::default(), &ask, at)
            .await
            .unwrap();
        let u = |a: &Admission| {
            a.tightest_budget(&alice(), SessionOf::default(), at)
                .unwrap()
                .utilisation
        };
        assert!((u(&a) - 0.8).abs() < 1e-9, "the reservation is not spend");
        let usage = Usage {
            input_tokens: 100_000,
            ..Usage::default()
        };
        ticket.settle("anthropic", Some("claude-sonnet-4-5"), &usage);
        assert!(
            (u(&a) - 0.83).abs() < 1e-9,
            "ended: its $0.30 counts: {}",
            u(&a)
        );
    }

    #[test]
    fn usd_budgets_do_not_stand_against_passthrough_requests() {
        let a = admission(
            r#"
[[budgets]]
name = "team-month"
scope = "team"
period = "monthly"
limit_usd = "100"
"#,
        );
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut who = alice();
        who.passthrough = true;
        assert!(a.tightest_budget(&who, SessionOf::default(), at).is_none());
        assert!(
            a.tightest_budget(&alice(), SessionOf::default(), at)
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_blocked_session_is_refused_until_resumed_and_a_stale_block_does_not_return() {
        let a = admission("budgets = []");
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let ask = WorstCase {
            model: Some("claude-sonnet-4-5".into()),
            max_tokens: 10,
            body: bytes::Bytes::from_static(b"{}"),
            billing: Usage::default(),
        };
        let s1 = SessionOf {
            session: Some("s-1"),
            agent: None,
        };
        let block = |episode: &str| SessionBlock {
            key_id: "key_alice".into(),
            session: "s-1".into(),
            guard: "loop".into(),
            episode: episode.into(),
            reason: "the same request body 3 times in a row".into(),
            at,
        };
        let admitted = |a: &Arc<Admission>, s| {
            let a = a.clone();
            let ask = ask.clone();
            async move { a.admit(&alice(), s, &ask, at).await.is_ok() }
        };
        a.apply(BudgetRecord::Blocked(block("e1")));
        assert!(!admitted(&a, s1).await, "blocked");
        assert!(
            admitted(&a, SessionOf::default()).await,
            "other requests go on"
        );
        assert_eq!(a.blocks_of("s-1").len(), 1);
        a.apply(BudgetRecord::Resumed(block("e1")));
        assert!(admitted(&a, s1).await, "resumed");
        a.apply(BudgetRecord::Blocked(block("e1")));
        assert!(
            admitted(&a, s1).await,
            "the same trip re-published stays resumed"
        );
        a.apply(BudgetRecord::Blocked(block("e2")));
        assert!(!admitted(&a, s1).await, "a new trip blocks again");
    }
}
