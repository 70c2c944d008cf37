//! A scenario's ladder diagram (message sequence chart) as inline SVG, drawn from the
//! network's journal: one lane per host, one arrow per datagram (through the NAT lane when
//! the sender or the receiver is behind a NAT, with the addresses each side sees), drops
//! marked with their reason, NAT mappings as they are created or expire, and the client's
//! state changes on its lane. Rows follow the order of events, not a time scale; the time is
//! in the left column and a gap of a second or more (a timer) gets its own dashed row.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::time::Duration;

use netsim::sim::{Fate, Hop, JournalEntry, Node};
use teredo::client::Event;

use super::decode::{end_node, meaning, Kind};
use super::svg::{arrowhead, cross, esc, line, text, Anchor};
use crate::lab::ScenarioJournal;

const LANE_W: f64 = 170.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 56.0;
const HOP_H: f64 = 54.0;
const NOTE_H: f64 = 22.0;
/// A silence this long gets a row of its own (a timer ran).
const GAP: Duration = Duration::from_secs(1);

/// What the lanes are called: the scenario's client profile and NAT preset, and the peer's.
#[derive(Clone, Debug)]
pub(crate) struct LaneNames {
    pub(crate) client: String,
    pub(crate) nat: String,
    pub(crate) peer: String,
    pub(crate) peer_nat: String,
    /// When not empty, these lanes instead (a real-socket run's remote addresses).
    pub(crate) fixed: Vec<(Node, String)>,
}

/// One row of the chart.
enum Row<'a> {
    Hop(&'a Hop),
    Note(Duration, Node, String),
    Event(Duration, usize, &'a Event),
    Gap(Duration),
}

impl Row<'_> {
    fn height(&self) -> f64 {
        match self {
            Self::Hop(_) => HOP_H,
            _ => NOTE_H,
        }
    }
}

/// The lanes, left to right: the scenario's client and its NAT, the server's two addresses,
/// the relay, the native host, then the peer (NAT, client), an attacker and "nowhere" when
/// the journal has them.
fn lanes(j: &ScenarioJournal, names: &LaneNames) -> Vec<(Node, String)> {
    if !names.fixed.is_empty() {
        return names.fixed.clone();
    }
    let mut l = vec![(Node::Client(0), format!("client ({})", names.client))];
    if j.behind_nat.first().copied().unwrap_or(false) {
        l.push((Node::Nat(0), format!("NAT ({})", names.nat)));
    }
    l.push((Node::ServerPrimary, "server primary".to_owned()));
    l.push((Node::ServerSecondary, "server secondary".to_owned()));
    l.push((Node::Relay, "relay".to_owned()));
    l.push((Node::NativeHost, "native host".to_owned()));
    for i in 1..j.behind_nat.len() {
        if j.behind_nat[i] {
            l.push((Node::Nat(i), format!("peer NAT ({})", names.peer_nat)));
        }
        l.push((Node::Client(i), format!("peer ({})", names.peer)));
    }
    let used = |n: Node| {
        j.entries.iter().any(|e| match e {
            JournalEntry::Hop(h) => h.from_node == n || end_node(h) == Some(n),
            JournalEntry::Note { node, .. } => *node == n,
        })
    };
    if used(Node::Injected) {
        l.push((Node::Injected, "attacker".to_owned()));
    }
    if used(Node::Nowhere) {
        l.push((Node::Nowhere, "nowhere".to_owned()));
    }
    l
}

/// The rows: journal entries and client events merged by time (events after the datagrams
/// of the same instant), with a gap row before any silence of [`GAP`] or more.
fn rows(j: &ScenarioJournal) -> Vec<Row<'_>> {
    let mut events: Vec<(Duration, usize, &Event)> = j
        .events
        .iter()
        .enumerate()
        .flat_map(|(i, ev)| ev.iter().map(move |(t, e)| (*t, i, e)))
        .collect();
    events.sort_by_key(|(t, i, _)| (*t, *i));
    let mut out = Vec::new();
    let mut ev = events.into_iter().peekable();
    for e in &j.entries {
        let at = match e {
            JournalEntry::Hop(h) => h.at,
            JournalEntry::Note { at, .. } => *at,
        };
        while let Some((t, i, e)) = ev.next_if(|(t, _, _)| *t < at) {
            out.push(Row::Event(t, i, e));
        }
        out.push(match e {
            JournalEntry::Hop(h) => Row::Hop(h),
            JournalEntry::Note { at, node, text } => Row::Note(*at, *node, text.clone()),
        });
    }
    out.extend(ev.map(|(t, i, e)| Row::Event(t, i, e)));
    let mut with_gaps = Vec::with_capacity(out.len());
    let mut last = Duration::ZERO;
    for r in out {
        let at = row_time(&r);
        if at.saturating_sub(last) >= GAP {
            with_gaps.push(Row::Gap(at - last));
        }
        last = at;
        with_gaps.push(r);
    }
    with_gaps
}

fn row_time(r: &Row<'_>) -> Duration {
    match r {
        Row::Hop(h) => h.at,
        Row::Note(t, ..) | Row::Event(t, ..) | Row::Gap(t) => *t,
    }
}

fn event_text(e: &Event) -> (String, &'static str) {
    match e {
        Event::StateChanged(s) => (format!("state: {s}"), "ev-state"),
        Event::Qualified { address, nat } => (format!("qualified {address} (NAT {nat})"), "ev-ok"),
        Event::AddressChanged { new, .. } => (format!("address changed -> {new}"), "ev-warn"),
        Event::Failed { error } => (format!("offline: {error}"), "ev-fail"),
        Event::PeerTrusted { peer, mapping } => {
            (format!("peer {peer} trusted via {mapping}"), "ev-state")
        }
        Event::PeerUnreachable { peer } => (format!("peer {peer} unreachable"), "ev-warn"),
        other => (format!("{other:?}"), "ev-state"),
    }
}

/// Stats of a drawn ladder, for the page's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LadderStats {
    pub(crate) arrows: usize,
    pub(crate) drops: usize,
}

/// The SVG of one scenario's journal.
pub(crate) fn ladder(j: &ScenarioJournal, names: &LaneNames) -> (String, LadderStats) {
    let lanes = lanes(j, names);
    let rows = rows(j);
    let x_of = |n: Node| {
        lanes
            .iter()
            .position(|(l, _)| *l == n)
            .map(|i| LEFT + LANE_W * (i as f64 + 0.5))
    };
    // Room on the right for the last lane's event texts.
    let width = LEFT + LANE_W * lanes.len() as f64 + 220.0;
    let height = TOP + rows.iter().map(Row::height).sum::<f64>() + 20.0;
    let mut body = String::new();
    let mut stats = LadderStats::default();
    for (i, (_, name)) in lanes.iter().enumerate() {
        let x = LEFT + LANE_W * (i as f64 + 0.5);
        // A second line (after '\n') is the lane's address, smaller.
        match name.split_once('\n') {
            Some((name, addr)) => {
                text(&mut body, x, 14.0, Anchor::Middle, "lane-name", name);
                text(&mut body, x, 27.0, Anchor::Middle, "addr", addr);
            }
            None => text(&mut body, x, 20.0, Anchor::Middle, "lane-name", name),
        }
        line(&mut body, x, 30.0, x, height - 10.0, "lane");
    }
    let mut y = TOP;
    for r in &rows {
        let h = r.height();
        let t = format!("{:.3} s", row_time(r).as_secs_f64());
        match r {
            Row::Hop(hop) => {
                text(&mut body, 6.0, y + 30.0, Anchor::Start, "time", &t);
                if draw_hop(&mut body, hop, y + 26.0, &x_of) {
                    stats.drops += 1;
                }
                stats.arrows += 1;
            }
            Row::Note(_, node, s) => {
                text(&mut body, 6.0, y + 15.0, Anchor::Start, "time", &t);
                let x = x_of(*node).unwrap_or(LEFT);
                text(&mut body, x + 6.0, y + 15.0, Anchor::Start, "note", s);
            }
            Row::Event(_, i, e) => {
                text(&mut body, 6.0, y + 15.0, Anchor::Start, "time", &t);
                let x = x_of(Node::Client(*i)).unwrap_or(LEFT);
                let (s, class) = event_text(e);
                let peer = if *i > 0 { " peer" } else { "" };
                let _ = write!(body, r#"<g class="event {class}{peer}">"#);
                let _ = write!(
                    body,
                    r#"<circle cx="{x:.1}" cy="{:.1}" r="4" class="dot"/>"#,
                    y + 11.0
                );
                text(&mut body, x + 8.0, y + 15.0, Anchor::Start, "ev", &s);
                body.push_str("</g>");
            }
            Row::Gap(d) => {
                line(&mut body, LEFT, y + 11.0, width - 20.0, y + 11.0, "gap");
                let s = format!("{:.1} s later (timer)", d.as_secs_f64());
                text(&mut body, 6.0, y + 15.0, Anchor::Start, "gap-text", &s);
            }
        }
        y += h;
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" data-arrows="{}" data-drops="{}">"#,
        stats.arrows, stats.drops
    );
    svg.push_str(&body);
    svg.push_str("</svg>");
    (svg, stats)
}

fn addr(a: Option<SocketAddrV4>) -> String {
    a.map_or("?".to_owned(), |a| a.to_string())
}

/// Draws one datagram at height `y`: returns true when it was dropped.
fn draw_hop(out: &mut String, h: &Hop, y: f64, x_of: &dyn Fn(Node) -> Option<f64>) -> bool {
    let m = meaning(h);
    // The path: sender, its NAT, then the receiver's NAT and the receiver.
    let mut path: Vec<Node> = vec![h.from_node];
    if let (Node::Client(i), Some(_)) = (h.from_node, h.inner_from) {
        path.push(Node::Nat(i));
    }
    let (dropped, reason) = match &h.fate {
        Fate::Delivered { node, inner_to, .. } => {
            if let (Node::Client(i), Some(_)) = (node, inner_to) {
                path.push(Node::Nat(*i));
            }
            path.push(*node);
            (false, None)
        }
        Fate::Dropped { node, reason, .. } => {
            path.push(*node);
            (true, Some(reason.as_str()))
        }
        Fate::InFlight => (false, None),
    };
    path.dedup();
    let xs: Vec<f64> = path.iter().filter_map(|n| x_of(*n)).collect();
    let (Some(&x1), Some(&x2)) = (xs.first(), xs.last()) else {
        return dropped;
    };
    let right = x2 >= x1;
    // The second client's own traffic is drawn fainter: the scenario's client is the subject.
    let is_peer = |n: Node| matches!(n, Node::Client(i) | Node::Nat(i) if i > 0);
    let peer = is_peer(h.from_node) || end_node(h).is_some_and(is_peer);
    let class = format!(
        "arrow k-{}{}{}",
        m.kind.as_str(),
        if dropped { " dropped" } else { "" },
        if peer { " peer" } else { "" }
    );
    let _ = write!(
        out,
        r#"<g class="{class}" data-kind="{}"><title>{}</title>"#,
        m.kind.as_str(),
        esc(&tooltip(h, &m.label))
    );
    if xs.len() == 1 {
        // In flight at the end of the run: a stub.
        let x2 = if right { x1 + 30.0 } else { x1 - 30.0 };
        line(out, x1, y, x2, y, "shaft inflight");
    } else {
        line(out, x1, y, x2, y, "shaft");
        for x in &xs[1..xs.len() - 1] {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" class="via"/>"#
            );
        }
        if dropped {
            cross(out, x2, y, "x");
        } else {
            arrowhead(out, x2, y, right, "head");
        }
    }
    // The meaning, over the part of the arrow outside the sender's NAT.
    let x_out = if xs.len() > 2 && h.inner_from.is_some() {
        xs[1]
    } else {
        x1
    };
    text(
        out,
        (x_out + x2) / 2.0,
        y - 5.0,
        Anchor::Middle,
        "label",
        &m.label,
    );
    // The addresses as the sender sees them, by the sender...
    let (a_start, a_end) = if right {
        (Anchor::Start, Anchor::End)
    } else {
        (Anchor::End, Anchor::Start)
    };
    let off = if right { 4.0 } else { -4.0 };
    let sent = format!("{} -> {}", addr(h.inner_from.or(h.from)), addr(h.to));
    if !h.native {
        text(out, x1 + off, y + 13.0, a_start, "addr", &sent);
    }
    // ...and as the receiver sees them, by the receiver (after its NAT), a line lower.
    let seen = match (&h.fate, h.from) {
        (Fate::Delivered { inner_to, .. }, Some(from)) => match inner_to {
            Some(to) => Some(format!("{from} -> {to}")),
            None if h.inner_from.is_some() => Some(format!("from {from}")),
            None => None,
        },
        _ => None,
    };
    if let Some(s) = seen {
        text(out, x2 - off, y + 24.0, a_end, "addr seen", &s);
    }
    if let Some(reason) = reason {
        let s = format!("dropped: {reason}");
        text(out, x2 - off, y + 24.0, a_end, "drop-reason", &s);
    }
    // A mapping the sender's NAT created for it.
    if h.new_mapping {
        if let (Some(nat_x), Some(inner), Some(ext)) = (xs.get(1), h.inner_from, h.from) {
            let s = format!("+ mapping {inner} => {ext}");
            text(out, nat_x + 5.0, y - 16.0, Anchor::Start, "mapping", &s);
        }
    }
    out.push_str("</g>");
    dropped
}

fn tooltip(h: &Hop, label: &str) -> String {
    let mut s = format!("{label}\nsent {:.3} s", h.at.as_secs_f64());
    if let Some(i) = h.inner_from {
        let _ = write!(s, "\nsource inside the NAT: {i}");
    }
    if !h.native {
        let _ = write!(s, "\non the wire: {} -> {}", addr(h.from), addr(h.to));
    } else {
        s.push_str("\non the native IPv6 segment");
    }
    match &h.fate {
        Fate::Delivered { at, node, inner_to } => {
            let _ = write!(s, "\ndelivered {:.3} s to {node:?}", at.as_secs_f64());
            if let Some(t) = inner_to {
                let _ = write!(s, " at {t} (after the NAT)");
            }
        }
        Fate::Dropped { at, node, reason } => {
            let _ = write!(
                s,
                "\ndropped {:.3} s by {node:?}: {reason}",
                at.as_secs_f64()
            );
        }
        Fate::InFlight => s.push_str("\nstill in flight at the end of the run"),
    }
    let _ = write!(s, "\n{} bytes", h.payload.len());
    s
}

/// Whether the kind is one the legend lists (every kind is).
pub(crate) const LEGEND: &[(Kind, &str)] = &[
    (Kind::Rs, "router solicitation"),
    (Kind::Ra, "router advertisement"),
    (Kind::Bubble, "bubble"),
    (Kind::IndirectBubble, "indirect bubble"),
    (Kind::Echo, "echo"),
    (Kind::Data, "data"),
    (Kind::Malformed, "malformed / forged"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{run_scenario_with, scenario_named};

    fn names() -> LaneNames {
        LaneNames {
            client: "xp-sp2".into(),
            nat: "symmetric".into(),
            peer: "vista".into(),
            peer_nat: "port-restricted".into(),
            fixed: Vec::new(),
        }
    }

    #[test]
    fn xp_behind_symmetric_nat_shows_why_it_goes_offline() {
        let s = scenario_named("xp-sp2__symmetric").unwrap();
        assert_eq!(s.name(), "xp-sp2__symmetric");
        let r = run_scenario_with(&s, 1, false, true).unwrap();
        let j = r.journal.as_ref().unwrap();
        let (svg, stats) = ladder(j, &names());
        let hops = j
            .entries
            .iter()
            .filter(|e| matches!(e, JournalEntry::Hop(_)))
            .count();
        assert_eq!(stats.arrows, hops);
        assert_eq!(svg.matches("<g class=\"arrow").count(), hops);
        // The cone probe's answers from the secondary are filtered by the NAT...
        assert!(svg.contains("RS cone=1"), "{svg}");
        assert!(svg.contains("dropped: filtered by the NAT"));
        // ...the two restricted RSs reveal two different mappings...
        let mapped: Vec<&str> = svg
            .split(r#"class="label">RA mapped 203.0.113.1:"#)
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .collect();
        let mut distinct = mapped.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 2, "{mapped:?}");
        assert!(svg.matches("+ mapping 10.0.0.2").count() >= 2);
        // ...and the client's lane says why it gave up.
        assert!(svg.contains("offline: client behind symmetric NAT"));
        assert!(svg.contains("s later (timer)"));
    }

    #[test]
    fn rows_merge_events_after_datagrams_of_the_same_instant() {
        let j = ScenarioJournal {
            entries: vec![JournalEntry::Note {
                at: Duration::from_secs(5),
                node: Node::Nat(0),
                text: "1 mapping(s) expired".into(),
            }],
            events: vec![vec![(
                Duration::from_secs(5),
                Event::StateChanged(teredo::client::State::Offline),
            )]],
            behind_nat: vec![true],
        };
        let r = rows(&j);
        assert!(matches!(r[0], Row::Gap(d) if d == Duration::from_secs(5)));
        assert!(matches!(r[1], Row::Note(..)));
        assert!(matches!(r[2], Row::Event(..)));
        let (svg, stats) = ladder(&j, &names());
        assert_eq!(stats.arrows, 0);
        assert!(svg.contains("NAT (symmetric)"));
        assert!(svg.contains("1 mapping(s) expired"));
    }
}
