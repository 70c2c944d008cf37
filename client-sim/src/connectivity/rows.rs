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
    Row {
        from: End::new(P::Win7, N::PortRestricted, false),
        to: End::new(P::Win7, N::PortPreservingSymmetric, false),
        figure: "port restricted -> port-preserving symmetric: SNS+PP",
        expect: Reach::Works("SNS+PP"),
        why: "the receiver answers from a random port its NAT preserves and advertises it in \
              its indirect bubble; the sender, whose mapping is endpoint-independent, sends \
              to that port from its own mapping (which the random port's bubble to it let \
              in), and the answer through it makes the sender trust the receiver there",
    },
    Row {
        from: End::new(P::Win7, N::PortPreservingSymmetric, false),
        to: End::new(P::Win7, N::PortRestricted, false),
        figure: "port-preserving symmetric -> port restricted: SNS+PP",
        expect: Reach::Works("SNS+PP"),
        why: "the sender advertises its random port; the receiver sends there (opening its \
              NAT), the sender answers its indirect bubble from the random port, and each \
              trusts the other at the random port's mapping",
    },
    Row {
        from: End::new(P::Win7, N::PortPreservingSymmetric, false),
        to: End::new(P::Win7, N::PortPreservingSymmetric, false),
        figure: "port-preserving symmetric -> port-preserving symmetric: SNS+PP",
        expect: Reach::Works("SNS+PP"),
        why: "both advertise random ports through the server, and each random port's first \
              bubble goes to the other's random port, so both NATs preserve the ports \
              towards each other (§3.3: the second direct bubble gets through)",
    },
    Row {
        from: End::new(P::Win7, N::PortPreservingSymmetric, false),
        to: End::new(P::Win7, N::SequentialSymmetric, false),
        figure: "port-preserving symmetric -> sequential port-symmetric: SNS+SS",
        expect: Reach::Works("SNS+SS"),
        why: "the receiver learns the sender's random port first, so its echo test's bubble \
              goes there and the predicted port (midpoint of the two RAs) is the mapping \
              towards the sender's random port",
    },
    Row {
        from: End::new(P::Win7, N::PortRestricted, false),
        to: End::new(P::Win7, N::SequentialSymmetric, false),
        figure: "port restricted -> sequential port-symmetric: SNS+SS",
        expect: Reach::Works("SNS+SS"),
        why: "the receiver's echo test bubble goes to the sender's embedded mapping; the \
              sender sends to the predicted port from that mapping",
    },
    Row {
        from: End::new(P::Win7, N::SequentialSymmetric, false),
        to: End::new(P::Win7, N::PortRestricted, false),
        figure: "sequential port-symmetric -> port restricted: SNS+SS",
        expect: Reach::Works("SNS+SS"),
        why: "the sender's echo test predicts the port of its bubble to the receiver's \
              embedded mapping; the receiver sends there, which is that very mapping",
    },
    Row {
        from: End::new(P::Win7, N::SequentialSymmetric, false),
        to: End::new(P::Win7, N::SequentialSymmetric, false),
        figure: "sequential port-symmetric -> sequential port-symmetric: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "each echo test's bubble goes where the other will not send from: the predicted \
              ports admit only the wrong remote port",
    },
    Row {
        from: End::new(P::Win7, N::SequentialSymmetric, false),
        to: End::new(P::Win7, N::PortPreservingSymmetric, false),
        figure: "sequential port-symmetric -> port-preserving symmetric: No",
        expect: Reach::No(NatDrop::Filtered),
        why: "the sender's echo test runs before it knows the receiver's random port, so its \
              predicted mapping admits the receiver's embedded mapping only",
    },
    Row {
        from: End::new(P::Vista, N::PortRestricted, false),
        to: End::new(P::Win7, N::PortPreservingSymmetric, false),
        figure: "port restricted -> port-preserving symmetric: SNS+PP",
        expect: Reach::No(NatDrop::Filtered),
        why: "vista lacks the port-preserving extension (no source that it has it): it never \
              sends to the advertised random port, so its NAT filters everything from the \
              symmetric side",
    },
    Row {
        from: End::new(P::Miredo, N::PortRestricted, false),
        to: End::new(P::Win7, N::SequentialSymmetric, false),
        figure: "port restricted -> sequential port-symmetric: SNS+SS",
        expect: Reach::No(NatDrop::Filtered),
        why: "miredo ignores the Random Port trailer: nothing goes to the predicted port",
    },
    Row {
        from: End::new(P::Win7, N::PortPreservingSymmetric, false),
        to: End::new(P::Win7, N::PortRestricted, true),
        figure: "port-preserving symmetric -> UPnP port-restricted: No",
        expect: Reach::Works("SNS"),
        why: "the figure does not hold in this model: the receiver's lease admits anyone at \
              its embedded mapping (endpoint-independent filtering there), so the sender's \
              fresh mapping gets in and proves itself with the nonce of the receiver's \
              indirect bubble, as towards a cone NAT; no random port is needed",
    },
    Row {
        from: End::new(P::Win7, N::PortPreservingSymmetric, false),
        to: End::new(P::Win7, N::FullCone, false),
        figure: "port-preserving symmetric -> cone: SNS",
        expect: Reach::Works("SNS"),
        why: "the cone NAT admits the sender's fresh mapping; the receiver trusts it by the \
              nonce, and the sender trusts the receiver's embedded mapping",
    },
    Row {
        from: End::new(P::Win7, N::SequentialSymmetric, false),
        to: End::new(P::Win7, N::Restricted, false),
        figure: "sequential port-symmetric -> address restricted: SNS",
        expect: Reach::Works("SNS"),
        why: "symmetric NAT support would do; the sender cannot tell the peer's NAT, so its \
              echo test runs anyway and the peer answers at the predicted port, which ends \
              up carrying the traffic",
    },
];
