//! One Claude Code session as an agent tree: its events grouped by the
//! agent that sent them (`x-claude-code-agent-id`), each agent under the
//! one that started it (`x-claude-code-parent-agent-id`), with spend per
//! agent and per subtree.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::Serialize;

use super::logs::{TraceTotals, totals};
use super::{Lake, LakeError, Scope};

/// Every event of one session, oldest first, with totals and the agent
/// tree.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub totals: TraceTotals,
    /// The main agent, its subagents under it.
    pub agents: AgentNode,
    pub events: Vec<serde_json::Value>,
}

/// One agent of a session and what it spent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentNode {
    /// Null for the main agent (Claude Code sends no agent id for it).
    pub agent_id: Option<String>,
    /// The agent that started this one, as the client named it.
    pub parent_agent_id: Option<String>,
    /// This agent's own requests (zero for an agent only named as a
    /// parent).
    pub totals: TraceTotals,
    /// Spend of this agent and every agent below it.
    #[schema(value_type = String)]
    pub subtree_spend_usd: Decimal,
    #[schema(no_recursion)]
    pub children: Vec<AgentNode>,
}

/// An agent's key: `None` is the main agent.
type AgentKey = Option<String>;

/// Deepest level an agent is shown at in a session's tree (the main agent
/// is level 1). Claude Code's subagents nest a few levels, but agent ids
/// are the client's: a session can chain each subagent under the one
/// before, as deep as it has requests, and building, serializing and
/// dropping the tree each recurse once per level, so a chain of thousands
/// overflowed the thread's stack. Agents below this level are shown flat
/// under their ancestor at it, each with its own totals.
pub const MAX_AGENT_DEPTH: usize = 32;

impl Lake {
    /// Every event of a session with its agent tree; `None` when the
    /// session has no events `scope` may see.
    pub async fn session(
        &self,
        scope: &Scope,
        session_id: &str,
        max_events: usize,
    ) -> Result<Option<SessionView>, LakeError> {
        let events = self
            .events_where(scope, "session_id", session_id, max_events)
            .await?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(SessionView {
            session_id: session_id.to_owned(),
            totals: totals(&events),
            agents: agent_tree(&events),
            events,
        }))
    }
}

/// The text of `field` on an event, when present.
fn text(e: &serde_json::Value, field: &str) -> Option<String> {
    e[field].as_str().map(str::to_owned)
}

/// Groups events into agents under their parents, rooted at the main
/// agent. A parent named but never seen sending becomes an empty node; a
/// subagent without a parent, or caught in a cycle, hangs under the main
/// agent so no event is left out of the tree.
pub fn agent_tree(events: &[serde_json::Value]) -> AgentNode {
    let mut own: BTreeMap<AgentKey, Vec<serde_json::Value>> = BTreeMap::new();
    let mut parent: BTreeMap<AgentKey, Option<String>> = BTreeMap::new();
    own.entry(None).or_default();
    for e in events {
        let key = text(e, "agent_id");
        let entry = parent.entry(key.clone()).or_default();
        if entry.is_none() {
            *entry = text(e, "parent_agent_id");
        }
        own.entry(key).or_default().push(e.clone());
    }
    for p in parent.values().flatten().cloned().collect::<Vec<_>>() {
        own.entry(Some(p)).or_default();
    }
    let mut children: BTreeMap<AgentKey, Vec<AgentKey>> = BTreeMap::new();
    for key in own.keys().filter(|k| k.is_some()) {
        let up = parent.get(key).cloned().flatten();
        let up = up.filter(|p| Some(p) != key.as_ref());
        children.entry(up).or_default().push(key.clone());
    }
    let mut seen = BTreeSet::new();
    let mut root = build(None, 1, &own, &parent, &children, &mut seen);
    // Agents only reachable through a cycle: shown under the main agent.
    for key in own
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect::<Vec<_>>()
    {
        if !seen.contains(&key) {
            let node = build(key, 2, &own, &parent, &children, &mut seen);
            root.subtree_spend_usd += node.subtree_spend_usd;
            root.children.push(node);
        }
    }
    root
}

/// The node of `key` at `level` and, depth first, those below it not yet
/// placed; past [`MAX_AGENT_DEPTH`], flat.
fn build(
    key: AgentKey,
    level: usize,
    own: &BTreeMap<AgentKey, Vec<serde_json::Value>>,
    parent: &BTreeMap<AgentKey, Option<String>>,
    children: &BTreeMap<AgentKey, Vec<AgentKey>>,
    seen: &mut BTreeSet<AgentKey>,
) -> AgentNode {
    seen.insert(key.clone());
    let mut node = alone(key.clone(), own, parent);
    let mut below = Vec::new();
    if level >= MAX_AGENT_DEPTH {
        let flat = descendants(&key, children, seen);
        below.extend(flat.into_iter().map(|k| alone(k, own, parent)));
    } else {
        for child in children.get(&key).into_iter().flatten() {
            if !seen.contains(child) {
                below.push(build(child.clone(), level + 1, own, parent, children, seen));
            }
        }
    }
    for child in below {
        node.subtree_spend_usd += child.subtree_spend_usd;
        node.children.push(child);
    }
    node
}

/// The node of `key` with its own requests and no children.
fn alone(
    key: AgentKey,
    own: &BTreeMap<AgentKey, Vec<serde_json::Value>>,
    parent: &BTreeMap<AgentKey, Option<String>>,
) -> AgentNode {
    let t = totals(own.get(&key).map_or(&[][..], Vec::as_slice));
    AgentNode {
        parent_agent_id: parent.get(&key).cloned().flatten(),
        subtree_spend_usd: t.spend_usd,
        totals: t,
        children: Vec::new(),
        agent_id: key,
    }
}

/// Every agent below `key` not yet placed, marked placed, found without
/// recursion.
fn descendants(
    key: &AgentKey,
    children: &BTreeMap<AgentKey, Vec<AgentKey>>,
    seen: &mut BTreeSet<AgentKey>,
) -> Vec<AgentKey> {
    let mut found = Vec::new();
    let mut stack: Vec<&AgentKey> = children.get(key).into_iter().flatten().collect();
    while let Some(k) = stack.pop() {
        if seen.insert(k.clone()) {
            found.push(k.clone());
            stack.extend(children.get(k).into_iter().flatten());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(agent: Option<&str>, parent: Option<&str>, usd: &str) -> serde_json::Value {
        serde_json::json!({"status": 200, "cost_usd": usd, "billed_by": "api",
            "agent_id": agent, "parent_agent_id": parent, "latency_ms": 1,
            "usage": {"input_tokens": 1},
            "started_at": "2026-12-01T10:00:00.000Z", "ended_at": "2026-12-01T10:00:01.000Z"})
    }

    #[test]
    fn subagents_hang_under_their_parents_with_their_own_and_subtree_spend() {
        let events = vec![
            event(None, None, "1.000000000000"),
            event(Some("a"), None, "0.500000000000"),
            event(Some("b"), Some("a"), "0.250000000000"),
            event(Some("b"), Some("a"), "0.250000000000"),
            event(Some("c"), Some("ghost"), "0.100000000000"),
        ];
        let root = agent_tree(&events);
        assert_eq!(root.agent_id, None);
        assert_eq!(root.totals.requests, 1);
        assert_eq!(root.subtree_spend_usd, Decimal::new(21, 1));
        let ids: Vec<_> = root.children.iter().map(|c| c.agent_id.clone()).collect();
        assert_eq!(ids, vec![Some("a".into()), Some("ghost".into())]);
        let a = &root.children[0];
        assert_eq!(a.totals.spend_usd, Decimal::new(5, 1));
        assert_eq!(a.subtree_spend_usd, Decimal::new(10, 1));
        assert_eq!(a.children[0].agent_id.as_deref(), Some("b"));
        assert_eq!(a.children[0].parent_agent_id.as_deref(), Some("a"));
        assert_eq!(a.children[0].totals.requests, 2);
        let ghost = &root.children[1];
        assert_eq!(ghost.totals.requests, 0, "named as a parent only");
        assert_eq!(ghost.children[0].agent_id.as_deref(), Some("c"));
    }

    #[test]
    fn a_parent_cycle_still_shows_every_agent_once() {
        let events = vec![
            event(Some("x"), Some("y"), "0.100000000000"),
            event(Some("y"), Some("x"), "0.200000000000"),
        ];
        let root = agent_tree(&events);
        assert_eq!(root.totals.requests, 0, "no main-agent request");
        assert_eq!(root.subtree_spend_usd, Decimal::new(3, 1));
        let mut count = 0;
        let mut stack = vec![&root];
        while let Some(n) = stack.pop() {
            count += 1;
            stack.extend(n.children.iter());
        }
        assert_eq!(count, 3, "main, x and y, each once");
    }

    /// The depth of `node`'s tree (1 for a leaf), counted without recursion.
    fn depth(node: &AgentNode) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(node, 1)];
        while let Some((n, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(n.children.iter().map(|c| (c, d + 1)));
        }
        deepest
    }

    #[test]
    fn a_chain_of_ten_thousand_agents_is_shown_bounded_with_every_request_and_cent() {
        // Agent ids are the client's: a session can chain each subagent
        // under the one before, as deep as it has requests. Built, shown
        // and dropped by recursion, that overflowed the thread's stack.
        let n: usize = 10_000;
        let ids: Vec<String> = (0..n).map(|i| format!("agent-{i}")).collect();
        let events: Vec<_> = (0..n)
            .map(|i| {
                let parent = i.checked_sub(1).map(|p| ids[p].as_str());
                event(Some(&ids[i]), parent, "0.010000000000")
            })
            .collect();
        let root = agent_tree(&events);
        assert!(depth(&root) <= MAX_AGENT_DEPTH + 1, "{}", depth(&root));
        assert_eq!(root.subtree_spend_usd, Decimal::new(100, 0));
        let (mut requests, mut nodes) = (0, 0);
        let mut stack = vec![&root];
        while let Some(node) = stack.pop() {
            requests += node.totals.requests;
            nodes += 1;
            stack.extend(node.children.iter());
        }
        assert_eq!(requests, n as u64, "every request is in the tree once");
        assert_eq!(nodes, n + 1, "every agent once, and the main agent");
        let shown = serde_json::to_string(&root).unwrap();
        assert!(shown.contains("agent-9999"));
    }

    /// Writes `events` as one lake file, without the agent columns when
    /// `old` (a file written before they existed).
    fn write_file(
        layout: &crate::lake::files::LakeLayout,
        first: u64,
        events: &[crate::event::LlmEvent],
        old: bool,
    ) {
        use crate::event::{BusPosition, to_record_batch};
        let rows: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    BusPosition {
                        partition: 0,
                        offset: first + i as u64,
                    },
                    e,
                )
            })
            .collect();
        let mut batch = to_record_batch(&rows).unwrap();
        if old {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|i| !batch.schema().field(*i).name().contains("agent_id"))
                .collect();
            batch = batch.project(&keep).unwrap();
        }
        let day = events[0].started_at.date_naive();
        let last = first + events.len() as u64 - 1;
        let path = layout.file_path(day, 0, first, last);
        crate::lake::files::write_atomically(&path, &batch).unwrap();
    }

    #[tokio::test]
    async fn a_session_spans_old_files_without_agent_columns_and_groups_by_agent() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::lake::files::LakeLayout::new(dir.path());
        let mut old = crate::event::tests::sample_event();
        old.agent_id = None;
        old.parent_agent_id = None;
        write_file(&layout, 0, &[old.clone()], true);
        let mut sub = crate::event::tests::sample_event();
        sub.event_id = crate::event::LlmEvent::new_id();
        sub.agent_id = Some("agent-b".into());
        sub.parent_agent_id = None;
        write_file(&layout, 1, &[sub], false);

        let lake = Lake::open(&layout).await.unwrap();
        let view = lake
            .session(&Scope::All, old.session_id.as_deref().unwrap(), 10)
            .await
            .unwrap()
            .expect("the session has events");
        assert_eq!(view.events.len(), 2);
        assert_eq!(view.agents.agent_id, None);
        assert_eq!(
            view.agents.totals.requests, 1,
            "the old file's event is the main agent's"
        );
        assert_eq!(view.agents.children.len(), 1);
        assert_eq!(view.agents.children[0].agent_id.as_deref(), Some("agent-b"));

        let q = super::super::SpendQuery {
            group_by: vec![super::super::GroupBy::Agent],
            filter: Default::default(),
            limit: 10,
        };
        let spend = lake.spend(&Scope::All, &q).await.unwrap();
        let mut agents: Vec<_> = spend.data.iter().map(|r| r["agent"].clone()).collect();
        agents.sort_by_key(|a| a.to_string());
        assert_eq!(
            agents,
            vec![serde_json::json!("agent-b"), serde_json::Value::Null]
        );
    }

    #[tokio::test]
    async fn a_view_past_its_event_limit_is_refused_by_name_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::lake::files::LakeLayout::new(dir.path());
        // One session (and trace) ID reused by three requests.
        let first = crate::event::tests::sample_event();
        let events: Vec<_> = (0..3)
            .map(|_| {
                let mut e = first.clone();
                e.event_id = crate::event::LlmEvent::new_id();
                e
            })
            .collect();
        write_file(&layout, 0, &events, false);
        let lake = Lake::open(&layout).await.unwrap();
        let session = first.session_id.as_deref().unwrap();

        let whole = lake.session(&Scope::All, session, 3).await.unwrap();
        assert_eq!(whole.expect("three events").events.len(), 3);
        let whole = lake.trace(&Scope::All, &first.trace_id, 3).await.unwrap();
        assert_eq!(whole.expect("three events").totals.requests, 3);

        let refused = lake.session(&Scope::All, session, 2).await.unwrap_err();
        let message = refused.to_string();
        assert!(
            matches!(refused, LakeError::TooManyEvents { limit: 2, .. }),
            "{message}"
        );
        assert!(
            message.contains("session_id") && message.contains("/v1/logs"),
            "{message}"
        );
        let refused = lake
            .trace(&Scope::All, &first.trace_id, 2)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("trace_id"), "{refused}");
    }
}
