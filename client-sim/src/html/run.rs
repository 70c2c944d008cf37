//! The page of one real-socket run (`qualify --html FILE`, `ping --html FILE`): the outcome,
//! the status block and the command's own text, and a ladder diagram of every datagram the
//! run's sockets exchanged (lanes: the client, the in-process NAT model if any, the server's
//! two addresses, then each other remote address). Self-contained like the lab's page.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::ladder::{ladder, LaneNames};
use super::page::{kind_css, legend, CSS};
use super::svg::esc;
use crate::wire_trace::{Role, WireTrace};

/// What the page shows.
#[derive(Debug)]
pub struct RunPage<'a> {
    /// The heading, e.g. `client-sim qualify`.
    pub title: String,
    /// One line under it: outcome, exit status, profile, NAT.
    pub summary: String,
    /// Whether the run did what it was asked (colours the summary).
    pub ok: bool,
    /// Text blocks shown as they were printed: (heading, text).
    pub blocks: Vec<(String, String)>,
    /// The datagrams.
    pub trace: &'a WireTrace,
    /// The client's profile (its lane's name).
    pub profile: String,
    /// The server's primary and secondary addresses.
    pub server: Ipv4Addr,
    /// See `server`.
    pub secondary: Ipv4Addr,
    /// Remote addresses whose role the run knows.
    pub roles: Vec<(SocketAddrV4, Role)>,
}

const SCRIPT: &str = r#"
(function () {
  var svg = document.querySelector('svg.ladder');
  var arrows = svg ? svg.querySelectorAll('g.arrow').length : 0;
  var drops = svg ? svg.querySelectorAll('g.arrow.dropped').length : 0;
  var lanes = svg ? svg.querySelectorAll('text.lane-name').length : 0;
  var stats = document.getElementById('stats');
  stats.dataset.arrows = String(arrows);
  stats.dataset.drops = String(drops);
  stats.dataset.lanes = String(lanes);
  stats.textContent = lanes + ' lanes, ' + arrows + ' datagrams drawn, ' + drops + ' dropped';
  document.body.dataset.ready = '1';
  console.log('teredo-lab report ready: ' + stats.textContent);
})();
"#;

/// The document.
pub fn render_run(p: &RunPage<'_>) -> String {
    let (journal, mut lanes) = p.trace.journal(p.server, p.secondary, &p.roles);
    if let Some(l) = lanes.first_mut() {
        l.1 = format!("client\n({})", p.profile);
    }
    let names = LaneNames {
        client: p.profile.clone(),
        nat: String::new(),
        peer: String::new(),
        peer_nat: String::new(),
        fixed: lanes,
    };
    let (svg, stats) = ladder(&journal, &names);
    let mut out = String::with_capacity(64 * 1024 + svg.len());
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
    let _ = write!(out, "<title>{}</title><style>", esc(&p.title));
    out.push_str(CSS);
    out.push_str("pre{background:#f6f6f6;border:1px solid #ddd;padding:6px;font-size:12px;max-width:1100px;overflow-x:auto}\n");
    kind_css(&mut out);
    out.push_str("</style></head><body>");
    let _ = write!(out, "<h1>{}</h1>", esc(&p.title));
    let _ = write!(
        out,
        r#"<p class="summary{}">{}</p>"#,
        if p.ok { "" } else { " bad" },
        esc(&p.summary)
    );
    for (heading, text) in &p.blocks {
        let _ = write!(out, "<h2>{}</h2><pre>{}</pre>", esc(heading), esc(text));
    }
    let _ = write!(
        out,
        "<h2>Datagrams</h2><p>{} datagrams over the run's real sockets ({} dropped inside this \
         host){}; an outbound arrow ends where it was sent to (what the remote did with it is \
         not seen here). Hover over an arrow for its addresses and size.</p>",
        stats.arrows,
        stats.drops,
        if p.trace.unrecorded > 0 {
            format!(", {} more not recorded", p.trace.unrecorded)
        } else {
            String::new()
        }
    );
    out.push_str(&legend());
    out.push_str(r#"<p><span id="stats"></span></p>"#);
    let _ = write!(
        out,
        r#"<section class="scenario" id="run" data-arrows="{}"><div class="scroll">{svg}</div></section>"#,
        stats.arrows
    );
    out.push_str("<script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::wire_trace::DropSite;

    #[test]
    fn draws_every_datagram_and_escapes_text() {
        let t0 = Instant::now();
        let mut t = WireTrace::new(t0, true);
        let c: SocketAddrV4 = "10.0.0.2:5000".parse().unwrap();
        let s: SocketAddrV4 = "198.51.100.10:5000".parse().unwrap();
        let p: SocketAddrV4 = "198.51.100.1:3544".parse().unwrap();
        let q: SocketAddrV4 = "198.51.100.2:3544".parse().unwrap();
        t.sent(t0, c, s, p, true, None, &[1, 2, 3]);
        let d = Some((DropSite::Nat, "filtered by the NAT".to_owned()));
        t.received(t0 + Duration::from_millis(3), c, s, q, d, &[4]);
        let page = render_run(&RunPage {
            title: "client-sim qualify".into(),
            summary: "timeout <probe>".into(),
            ok: false,
            blocks: vec![("Status".into(), "State : probe & co".into())],
            trace: &t,
            profile: "xp-sp2".into(),
            server: Ipv4Addr::new(198, 51, 100, 1),
            secondary: Ipv4Addr::new(198, 51, 100, 2),
            roles: Vec::new(),
        });
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches(r#"<g class="arrow"#).count(), 2);
        assert!(page.contains(r#"data-arrows="2" data-drops="1""#), "{page}");
        assert!(page.contains(">client<") && page.contains(">(xp-sp2)<"));
        assert!(page.contains("+ mapping 10.0.0.2:5000 =&gt; 198.51.100.10:5000"));
        assert!(page.contains("dropped: filtered by the NAT"));
        assert!(page.contains("timeout &lt;probe&gt;") && page.contains("probe &amp; co"));
        assert!(!page.contains("<script src") && !page.contains("<link"));
    }
}
