//! The rows of RFC 6081 Figure 1 the lab asserts, each with its reasoning.

use netsim::{NatDrop, NatPreset};
use teredo::client::Profile;

use super::{End, Reach, Row};

use NatPreset as N;
use Profile as P;

/// The rows.
pub const ROWS: &[Row] = &[
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Win7, N::Symmetric, true),
        figure: "UPnP port symmetric -> UPnP port symmetric: SNS+UPnP",
        expect: Reach::Works("SNS+UPnP"),
        why: "both addresses embed the leased port (the first RS left on it); each side \
              flags the other symmetric (a direct bubble from another mapping, §5.3.4.1) \
              and sends to the embedded mapping (§5.3.4.2/3), which the lease lets in",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Win7, N::PortRestricted, true),
        figure: "UPnP port symmetric -> UPnP port-restricted: SNS+UPnP",
        expect: Reach::Works("SNS+UPnP"),
        why: "the receiver's lease admits the sender's fresh mappings; the receiver trusts \
              the sender by the nonce of its indirect bubble and answers from its one \
              (endpoint-independent) mapping, which the sender's NAT opened",
    },
    Row {
        from: End::new(P::Win7, N::PortRestricted, true),
        to: End::new(P::Win7, N::Symmetric, true),
        figure: "UPnP port-restricted -> UPnP port symmetric: SNS+UPnP",
        expect: Reach::Works("SNS+UPnP"),
        why: "the mirror image: the symmetric side sends to the embedded (leased) mapping",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Win7, N::FullCone, false),
        figure: "UPnP port symmetric -> cone: SNS",
        expect: Reach::Works("SNS"),
        why: "the cone peer is not symmetric (its bubbles come from its embedded mapping): \
              plain symmetric NAT support, the peer answers at the mapping the nonce proved",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Win7, N::Restricted, false),
        figure: "UPnP port symmetric -> address restricted: SNS",
        expect: Reach::Works("SNS"),
        why: "address-dependent filtering admits the sender's fresh port once the peer \
              answered the sender's address: symmetric NAT support alone",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Win7, N::PortRestricted, false),
        figure: "UPnP port symmetric -> port restricted: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "the peer's NAT admits only the mapping it sent to (the embedded, leased one); \
              the sender's datagrams leave from fresh ports",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, false),
        to: End::new(P::Win7, N::Symmetric, false),
        figure: "port symmetric -> port symmetric: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "the control: without UPnP neither NAT admits the other's fresh mappings",
    },
    Row {
        from: End::new(P::Miredo, N::PortRestricted, false),
        to: End::new(P::Win7, N::PortRestricted, true),
        figure: "port restricted -> UPnP port-restricted: Yes",
        expect: Reach::Works("RFC 4380"),
        why: "both mappings are endpoint-independent: plain RFC 4380 bubbles, whatever the \
              receiver's gateway",
    },
    Row {
        from: End::new(P::Miredo, N::FullCone, false),
        to: End::new(P::Win7, N::Symmetric, true),
        figure: "cone -> UPnP port symmetric: SNS",
        expect: Reach::NoSns,
        why: "win7 trusts miredo (its bubble comes from its embedded mapping, through the \
              lease), but win7's answers leave from a fresh mapping and miredo 1.2, without \
              symmetric NAT support, drops them",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::Miredo, N::FullCone, false),
        figure: "UPnP port symmetric -> cone: SNS",
        expect: Reach::NoSns,
        why: "the cone NAT lets win7's datagrams in, from a fresh mapping; miredo ignores the \
              nonce trailer and drops them",
    },
    Row {
        from: End::new(P::XpSp2, N::FullCone, false),
        to: End::new(P::Win7, N::Symmetric, true),
        figure: "cone -> UPnP port symmetric: SNS",
        expect: Reach::NoSns,
        why: "as with miredo: XP has no symmetric NAT support",
    },
    Row {
        from: End::new(P::Win7, N::Symmetric, true),
        to: End::new(P::XpSp2, N::FullCone, false),
        figure: "UPnP port symmetric -> cone: SNS",
        expect: Reach::NoSns,
        why: "as with miredo: XP drops datagrams from a mapping the address does not embed",
    },
    Row {
        from: End::new(P::Vista, N::Symmetric, true),
        to: End::new(P::Win7, N::Symmetric, true),
        figure: "port symmetric -> UPnP port symmetric: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "vista does not ask the gateway (no source that it does): its address embeds a \
              filtered mapping, so the win7 side cannot answer it",
    },
];
