//! RFC 6081 §3 Figure 1 ("Matrix of Connectivity Improvements for Teredo Extensions") as
//! data: its nine NAT kinds in the figure's order, each mapped to a NAT preset of the model
//! (with or without a UPnP gateway), its 9×9 entries exactly as the RFC prints them (rows:
//! source NAT, columns: destination NAT), and the cells where the model, with Windows 7 on
//! both ends, does not do what the figure says, each with the reason.

use netsim::NatPreset;

/// An entry of the figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// "Supported by \[RFC4380\]".
    Yes,
    /// "Supported with the Symmetric NAT Support Extension".
    Sns,
    /// "... and UPnP Symmetric NAT Extension".
    SnsUpnp,
    /// "... and Port-Preserving Symmetric NAT Extension".
    SnsPp,
    /// "... and Sequential Port-Symmetric NAT Extension".
    SnsSs,
    /// "No connectivity".
    No,
}

impl Entry {
    /// The figure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "Yes",
            Self::Sns => "SNS",
            Self::SnsUpnp => "SNS+UPnP",
            Self::SnsPp => "SNS+PP",
            Self::SnsSs => "SNS+SS",
            Self::No => "No",
        }
    }

    /// The figure says the pair can talk.
    pub fn works(self) -> bool {
        self != Self::No
    }
}

/// One NAT kind of the figure (a row and a column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The figure's name, unabbreviated.
    pub name: &'static str,
    /// A short name for the printed matrix.
    pub short: &'static str,
    /// The model's preset.
    pub nat: NatPreset,
    /// The NAT runs a UPnP gateway.
    pub upnp: bool,
}

const fn kind(name: &'static str, short: &'static str, nat: NatPreset, upnp: bool) -> Kind {
    Kind {
        name,
        short,
        nat,
        upnp,
    }
}

/// The figure's kinds, in its order. "Port symmetric" is the model's `symmetric` (random
/// ports); "Address symmetric" its `symmetric-address` (two external addresses).
pub const KINDS: [Kind; 9] = [
    kind("Cone", "cone", NatPreset::FullCone, false),
    kind(
        "Address restricted",
        "addr-rest",
        NatPreset::Restricted,
        false,
    ),
    kind(
        "Port restricted",
        "port-rest",
        NatPreset::PortRestricted,
        false,
    ),
    kind(
        "UPnP Port-restricted",
        "upnp-pr",
        NatPreset::PortRestricted,
        true,
    ),
    kind("UPnP Port symmetric", "upnp-ps", NatPreset::Symmetric, true),
    kind(
        "Port-preserving Port-symmetric",
        "pp-ps",
        NatPreset::PortPreservingSymmetric,
        false,
    ),
    kind(
        "Sequential Port-symmetric",
        "seq-ps",
        NatPreset::SequentialSymmetric,
        false,
    ),
    kind("Port-symmetric", "port-sym", NatPreset::Symmetric, false),
    kind(
        "Address-symmetric",
        "addr-sym",
        NatPreset::SymmetricAddress,
        false,
    ),
];

use Entry::{No, Sns, SnsPp, SnsSs, SnsUpnp, Yes};

/// The figure's entries, `FIGURE[source][destination]` in [`KINDS`] order, as printed.
pub const FIGURE: [[Entry; 9]; 9] = [
    [Yes, Yes, Yes, Yes, Sns, Sns, Sns, Sns, Sns],
    [Yes, Yes, Yes, Yes, Sns, Sns, Sns, Sns, No],
    [Yes, Yes, Yes, Yes, No, SnsPp, SnsSs, No, No],
    [Yes, Yes, Yes, Yes, SnsUpnp, No, No, No, No],
    [Sns, Sns, No, SnsUpnp, SnsUpnp, No, No, No, No],
    [Sns, Sns, SnsPp, No, No, SnsPp, SnsSs, No, No],
    [Sns, Sns, SnsSs, No, No, No, No, No, No],
    [Sns, Sns, No, No, No, No, No, No, No],
    [Sns, No, No, No, No, No, No, No, No],
];

/// A cell where the model (Windows 7 on both ends) does not do what the figure says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deviation {
    /// Source kind, index into [`KINDS`].
    pub from: usize,
    /// Destination kind, index into [`KINDS`].
    pub to: usize,
    /// What the model does, as the grid labels it ("No", "Yes", "SNS", "SNS+UPnP", "SNS+PP",
    /// "SNS+SS", "SNS+UPnP+SS", "SNS+PP+SS"): one label, or several where the outcome hangs
    /// on which pool address an address-symmetric NAT picks (a seeded draw; the sets are
    /// those seen over lab seeds 1–40).
    pub observed: &'static [&'static str],
    /// Why.
    pub why: &'static str,
}

const fn dev(
    from: usize,
    to: usize,
    observed: &'static [&'static str],
    why: &'static str,
) -> Deviation {
    Deviation {
        from,
        to,
        observed,
        why,
    }
}

// Indices into KINDS, for the table below.
const CONE: usize = 0;
const ADDR_REST: usize = 1;
const PORT_REST: usize = 2;
const UPNP_PR: usize = 3;
const PP_PS: usize = 5;
const SEQ_PS: usize = 6;
const PORT_SYM: usize = 7;
const ADDR_SYM: usize = 8;

const LEASE_FROM: &str = "the sender's UPnP lease admits anyone at its embedded mapping (§3.2: \
     \"independent of the source\"), so the symmetric receiver's datagrams from fresh mappings \
     get in; the sender's NAT is not symmetric, so §5.3.4.2/3 (send to the embedded mapping) \
     do not apply and it answers the mapping it learned (SNS), which the receiver's NAT opened \
     towards the lease. The figure treats UPnP port-restricted as port-restricted here";
const LEASE_TO: &str = "the mirror image: the receiver's lease admits the symmetric sender's \
     fresh mappings, and the receiver (not symmetric itself) answers the mapping it learned";
const POOL: &str = "chance: the model's address-symmetric NAT (ADM + APDF, port-preserving, \
     arbitrary pooling over 2 addresses) puts a mapping on a random pool address; when the \
     one towards the peer (or the random port's, the port being preserved so the client sets \
     the Port-Preserving flag, §5.4.3) lands on the address embedded in the Teredo address, \
     the peer's filter admits it (SNS, +PP or +SS); otherwise it is the figure's \"No\"";

/// The documented deviations, each asserted by the grid test.
pub const DEVIATIONS: &[Deviation] = &[
    dev(UPNP_PR, PP_PS, &["SNS+UPnP"], LEASE_FROM),
    dev(UPNP_PR, SEQ_PS, &["SNS+UPnP"], LEASE_FROM),
    dev(UPNP_PR, PORT_SYM, &["SNS+UPnP"], LEASE_FROM),
    dev(UPNP_PR, ADDR_SYM, &["SNS+UPnP"], LEASE_FROM),
    dev(PP_PS, UPNP_PR, &["SNS+UPnP"], LEASE_TO),
    dev(
        SEQ_PS,
        UPNP_PR,
        &["SNS+UPnP+SS"],
        "as with a port-symmetric sender (the lease admits its fresh mappings), and the \
         sender's echo test, which runs whatever the peer, predicts the port that ends up \
         carrying the traffic",
    ),
    dev(PORT_SYM, UPNP_PR, &["SNS+UPnP"], LEASE_TO),
    dev(ADDR_SYM, UPNP_PR, &["SNS+UPnP"], LEASE_TO),
    dev(
        SEQ_PS,
        CONE,
        &["SNS+SS"],
        "SNS would do; the sender cannot tell the peer's NAT, so its echo test runs anyway and \
         the peer answers at the predicted port, which carries the traffic",
    ),
    dev(
        SEQ_PS,
        ADDR_REST,
        &["SNS+SS"],
        "as towards a cone: the echo test's predicted port carries the traffic",
    ),
    dev(
        PP_PS,
        SEQ_PS,
        &["SNS+PP+SS"],
        "the figure names the extension the pair needs; both are used: the receiver's echo \
         test bubble goes to the sender's random port (+PP) and predicts its own port (+SS)",
    ),
    dev(ADDR_REST, ADDR_SYM, &["No", "SNS", "SNS+PP"], POOL),
    dev(PORT_REST, ADDR_SYM, &["No", "SNS+PP"], POOL),
    dev(PP_PS, ADDR_SYM, &["No", "SNS+PP"], POOL),
    dev(ADDR_SYM, ADDR_REST, &["No", "SNS", "SNS+PP"], POOL),
    dev(ADDR_SYM, PORT_REST, &["No", "SNS+PP"], POOL),
    dev(ADDR_SYM, PP_PS, &["No", "SNS+PP"], POOL),
    dev(ADDR_SYM, SEQ_PS, &["No", "SNS+PP+SS"], POOL),
    dev(ADDR_SYM, ADDR_SYM, &["No", "SNS+PP"], POOL),
];

/// The deviation for a cell, if any.
pub fn deviation(from: usize, to: usize) -> Option<&'static Deviation> {
    DEVIATIONS.iter().find(|d| d.from == from && d.to == to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(from: &str, to: &str) -> Entry {
        let i = |n: &str| KINDS.iter().position(|k| k.name == n).unwrap();
        FIGURE[i(from)][i(to)]
    }

    /// The figure as RFC 6081 prints it (page 8), verbatim from its header row on.
    const RFC_TEXT: &str = "\
Source NAT| Cone | rest.| rest.| rest.| symm.| symm.| symm.| symm.| symm
----------+------+------+------+------+------+------+------+------+-----
Cone      |  Yes |  Yes |  Yes |  Yes |  SNS |  SNS |  SNS |  SNS |  SNS
----------+------+------+------+------+------+------+------+------+-----
Address   |  Yes |  Yes |  Yes |  Yes |  SNS |  SNS |  SNS |  SNS |  No
restricted|      |      |      |      |      |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
Port      |  Yes |  Yes |  Yes |  Yes |  No  | SNS+ | SNS+ |  No  |  No
restricted|      |      |      |      |      |  PP  |  SS  |      |
----------+------+------+------+------+------+------+------+------+-----
UPnP Port-|  Yes |  Yes |  Yes |  Yes | SNS+ |  No  |  No  |  No  |  No
restricted|      |      |      |      | UPnP |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
UPnP Port |  SNS |  SNS |  No  | SNS+ | SNS+ |  No  |  No  |  No  |  No
symmetric |      |      |      | UPnP | UPnP |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
Port-     |      |      |  SNS |      |      |  SNS |  SNS |      |
preserving|  SNS |  SNS |   +  |  No  |  No  |   +  |   +  |  No  |  No
Port-     |      |      |  PP  |      |      |  PP  |  SS  |      |
symmetric |      |      |      |      |      |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
Sequential|      |      |  SNS |      |      |      |      |      |
Port-     |  SNS |  SNS |   +  |  No  |  No  |  No  |  No  |  No  |  No
symmetric |      |      |  SS  |      |      |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
Port-     |  SNS |  SNS |  No  |  No  |  No  |  No  |  No  |  No  |  No
symmetric |      |      |      |      |      |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
Address-  |  SNS |  No  |  No  |  No  |  No  |  No  |  No  |  No  |  No
symmetric |      |      |      |      |      |      |      |      |
----------+------+------+------+------+------+------+------+------+-----
";

    /// All 81 entries, read off the RFC's own text: each row group between two rules, each
    /// column's lines joined ("SNS" "+" "PP" is "SNS+PP").
    #[test]
    fn figure_is_the_rfc_text() {
        let mut groups: Vec<Vec<&str>> = vec![Vec::new()];
        for line in RFC_TEXT.lines().skip(2) {
            if line.starts_with('-') {
                groups.push(Vec::new());
            } else if let Some(g) = groups.last_mut() {
                g.push(line);
            }
        }
        groups.retain(|g| !g.is_empty());
        assert_eq!(groups.len(), 9);
        for (i, (g, row)) in groups.iter().zip(FIGURE).enumerate() {
            for (j, entry) in row.iter().enumerate() {
                let text: String = g
                    .iter()
                    .map(|l| l.split('|').nth(j + 1).unwrap_or("").trim())
                    .collect();
                assert_eq!(
                    entry.as_str(),
                    text,
                    "row {i} ({}), column {j}",
                    KINDS[i].name
                );
            }
        }
    }

    /// A dozen entries read off the RFC's text, spelled as there.
    #[test]
    fn entries_match_the_rfc_text() {
        assert_eq!(at("Cone", "Address-symmetric"), Sns);
        assert_eq!(at("Address restricted", "Address-symmetric"), No);
        assert_eq!(
            at("Port restricted", "Port-preserving Port-symmetric"),
            SnsPp
        );
        assert_eq!(at("Port restricted", "Sequential Port-symmetric"), SnsSs);
        assert_eq!(at("Port restricted", "UPnP Port symmetric"), No);
        assert_eq!(at("UPnP Port-restricted", "UPnP Port symmetric"), SnsUpnp);
        assert_eq!(
            at("UPnP Port-restricted", "Port-preserving Port-symmetric"),
            No
        );
        assert_eq!(at("UPnP Port symmetric", "Port restricted"), No);
        assert_eq!(at("UPnP Port symmetric", "UPnP Port-restricted"), SnsUpnp);
        assert_eq!(
            at(
                "Port-preserving Port-symmetric",
                "Sequential Port-symmetric"
            ),
            SnsSs
        );
        assert_eq!(
            at("Sequential Port-symmetric", "Sequential Port-symmetric"),
            No
        );
        assert_eq!(at("Port-symmetric", "Address restricted"), Sns);
        assert_eq!(at("Address-symmetric", "Cone"), Sns);
        assert_eq!(at("Address-symmetric", "Address restricted"), No);
    }

    /// The figure is RFC 4380's "Yes" exactly where neither NAT is symmetric, and never
    /// "SNS+PP"/"SNS+SS"/"SNS+UPnP" without a NAT of that kind on one end.
    #[test]
    fn entries_are_consistent_with_their_kinds() {
        for (i, row) in FIGURE.iter().enumerate() {
            for (j, e) in row.iter().enumerate() {
                let cone_like = |k: usize| k <= 3;
                assert_eq!(*e == Yes, cone_like(i) && cone_like(j), "{i},{j}");
                let has = |n: NatPreset| KINDS[i].nat == n || KINDS[j].nat == n;
                match e {
                    SnsPp => assert!(has(NatPreset::PortPreservingSymmetric)),
                    SnsSs => assert!(has(NatPreset::SequentialSymmetric)),
                    SnsUpnp => assert!(KINDS[i].upnp || KINDS[j].upnp),
                    _ => {}
                }
            }
        }
        for (k, d) in DEVIATIONS.iter().enumerate() {
            assert_ne!(
                d.observed,
                [FIGURE[d.from][d.to].as_str()],
                "not a deviation: {d:?}"
            );
            assert!(
                DEVIATIONS[..k]
                    .iter()
                    .all(|e| (e.from, e.to) != (d.from, d.to)),
                "listed twice: {d:?}"
            );
        }
    }
}
