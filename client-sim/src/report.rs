//! The client status block, shaped like Windows' `netsh interface teredo show state`, as text
//! or JSON with the same fields.

use std::fmt;

use serde::Serialize;
use teredo::client::{Client, ClientError, State};

/// A snapshot of a client for display: every `show state` field, always present (`none`
/// in the text when a value is absent, `null` in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// `Type`: `client` or `enterpriseclient`.
    #[serde(rename = "type")]
    pub client_type: String,
    /// `Server Name`.
    pub server_name: String,
    /// `Client Refresh Interval`, seconds.
    pub client_refresh_interval: u64,
    /// `Client Port`: the client's own UDP port.
    pub client_port: u16,
    /// `State`: `qualified`, `dormant`, `offline`, `probe (primary server)`, …
    pub state: String,
    /// `Network`: `managed` or `unmanaged`.
    pub network: String,
    /// `NAT`: `none`, `cone`, `restricted`, `symmetric (port)`, `symmetric (address)`,
    /// `unknown`.
    pub nat: String,
    /// `NAT Special Behaviour`.
    pub nat_special_behaviour: NatSpecialBehaviour,
    /// `Local Mapping`: the client's socket address.
    pub local_mapping: String,
    /// `External NAT Mapping`: what the server saw.
    pub external_nat_mapping: Option<String>,
    /// `Error`.
    pub error: Option<String>,
    /// The Teredo address (only while qualified).
    pub teredo_address: Option<String>,
}

/// `NAT Special Behaviour   : UPNP: No, PortPreserving: Yes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NatSpecialBehaviour {
    /// The NAT's UPnP gateway granted the client a port mapping (RFC 6081 §5.3's UPnP-Enabled
    /// NAT flag; only profiles that ask, behind a NAT model with `upnp=on`).
    pub upnp: bool,
    /// Mapped port == local port (RFC 6081 §5.4); `None` before any mapping was learned.
    pub port_preserving: Option<bool>,
}

impl StatusReport {
    /// The snapshot of `client`.
    pub fn of(client: &Client) -> Self {
        let st = client.status();
        Self {
            client_type: st.client_type.to_string(),
            server_name: st.server_name,
            client_refresh_interval: st.refresh_interval.as_secs(),
            client_port: st.client_port,
            state: st.state.to_string(),
            network: if st.managed_network {
                "managed"
            } else {
                "unmanaged"
            }
            .to_owned(),
            nat: st.nat.to_string(),
            nat_special_behaviour: NatSpecialBehaviour {
                upnp: st.upnp,
                port_preserving: st.port_preserving,
            },
            local_mapping: st.local_mapping.to_string(),
            external_nat_mapping: st.external_mapping.map(|m| m.to_string()),
            error: st.error.map(|e| e.to_string()),
            teredo_address: st.address.map(|a| a.to_string()),
        }
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "Yes" } else { "No" };
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
        writeln!(f, "Teredo Parameters")?;
        writeln!(f, "---------------------------------------------")?;
        writeln!(f, "Type                    : {}", self.client_type)?;
        writeln!(f, "Server Name             : {}", self.server_name)?;
        writeln!(
            f,
            "Client Refresh Interval : {} seconds",
            self.client_refresh_interval
        )?;
        writeln!(f, "Client Port             : {}", self.client_port)?;
        writeln!(f, "State                   : {}", self.state)?;
        writeln!(f, "Network                 : {}", self.network)?;
        writeln!(f, "NAT                     : {}", self.nat)?;
        let pp = match self.nat_special_behaviour.port_preserving {
            Some(b) => yes_no(b),
            None => "unknown",
        };
        writeln!(
            f,
            "NAT Special Behaviour   : UPNP: {}, PortPreserving: {pp}",
            yes_no(self.nat_special_behaviour.upnp)
        )?;
        writeln!(f, "Local Mapping           : {}", self.local_mapping)?;
        writeln!(
            f,
            "External NAT Mapping    : {}",
            or_none(&self.external_nat_mapping)
        )?;
        writeln!(f, "Error                   : {}", or_none(&self.error))?;
        writeln!(
            f,
            "Teredo Address          : {}",
            or_none(&self.teredo_address)
        )
    }
}

/// How a qualification attempt ended, and the exit status `client-sim qualify` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Qualified: exit 0.
    Qualified,
    /// Dormant (Windows 7, idle): exit 0.
    Dormant,
    /// Offline behind a symmetric NAT (no RFC 6081 support): exit 3.
    SymmetricNat,
    /// No answer from the primary or the secondary server address: exit 4.
    ServerUnreachable,
    /// The managed-network rule keeps the client offline: exit 5.
    ManagedNetwork,
    /// `--timeout` elapsed while still probing: exit 6.
    Timeout,
}

impl Outcome {
    /// The outcome for a client's current state, `None` while it is still probing.
    pub fn of(state: State, error: Option<ClientError>) -> Option<Self> {
        match (state, error) {
            (State::Qualified, _) => Some(Self::Qualified),
            (State::Dormant, _) => Some(Self::Dormant),
            (State::Offline, Some(ClientError::SymmetricNat)) => Some(Self::SymmetricNat),
            (
                State::Offline,
                Some(ClientError::PrimaryUnreachable | ClientError::SecondaryUnreachable) | None,
            ) => Some(Self::ServerUnreachable),
            (State::Offline, Some(ClientError::ManagedNetwork)) => Some(Self::ManagedNetwork),
            (State::Probe(_), _) => None,
            // A state or error added later: still running, as far as we know (the
            // timeout ends the wait).
            _ => None,
        }
    }

    /// The process exit status: 0 qualified or dormant, 3 symmetric NAT, 4 server
    /// unreachable, 5 managed network, 6 timeout (1 is any other error, 2 a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Qualified | Self::Dormant => 0,
            Self::SymmetricNat => 3,
            Self::ServerUnreachable => 4,
            Self::ManagedNetwork => 5,
            Self::Timeout => 6,
        }
    }

    /// snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qualified => "qualified",
            Self::Dormant => "dormant",
            Self::SymmetricNat => "symmetric_nat",
            Self::ServerUnreachable => "server_unreachable",
            Self::ManagedNetwork => "managed_network",
            Self::Timeout => "timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Instant;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use teredo::client::{ClientConfig, ProbePhase, Profile, UpnpAnswer};

    use super::*;

    #[test]
    fn fresh_client_block_has_every_field() {
        let c = Client::new(
            ClientConfig::profile(Profile::Vista, Ipv4Addr::new(198, 51, 100, 1)),
            ChaCha8Rng::seed_from_u64(1),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000),
            Instant::now(),
        );
        let r = StatusReport::of(&c);
        let text = r.to_string();
        for line in [
            "Type                    : client",
            "Server Name             : 198.51.100.1",
            "Client Refresh Interval : 30 seconds",
            "Client Port             : 40000",
            "State                   : probe (primary server)",
            "NAT                     : unknown",
            "NAT Special Behaviour   : UPNP: No, PortPreserving: unknown",
            "Local Mapping           : 10.0.0.2:40000",
            "External NAT Mapping    : none",
            "Error                   : none",
            "Teredo Address          : none",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["type"], "client");
        assert_eq!(json["state"], "probe (primary server)");
        assert!(json["teredo_address"].is_null());
        assert!(json["nat_special_behaviour"]["port_preserving"].is_null());
    }

    #[test]
    fn upnp_yes_once_the_gateway_mapped_the_port() {
        let now = Instant::now();
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000);
        let mut c = Client::new(
            ClientConfig::profile(Profile::Win7, Ipv4Addr::new(198, 51, 100, 1)),
            ChaCha8Rng::seed_from_u64(1),
            local,
            now,
        );
        let no = "NAT Special Behaviour   : UPNP: No, PortPreserving: unknown";
        assert!(StatusReport::of(&c).to_string().contains(no));
        c.handle_upnp(
            now,
            UpnpAnswer::Mapped(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40000)),
        );
        let r = StatusReport::of(&c);
        assert!(r
            .to_string()
            .contains("NAT Special Behaviour   : UPNP: Yes, PortPreserving: unknown"));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["nat_special_behaviour"]["upnp"],
            true
        );
    }

    #[test]
    fn outcomes_and_exit_codes() {
        use ClientError as E;
        let cases = [
            (State::Qualified, None, Some(0)),
            (State::Dormant, None, Some(0)),
            (State::Offline, Some(E::SymmetricNat), Some(3)),
            (State::Offline, Some(E::PrimaryUnreachable), Some(4)),
            (State::Offline, Some(E::SecondaryUnreachable), Some(4)),
            (State::Offline, Some(E::ManagedNetwork), Some(5)),
            (State::Probe(ProbePhase::Cone), None, None),
        ];
        for (state, error, code) in cases {
            assert_eq!(
                Outcome::of(state, error).map(Outcome::exit_code),
                code,
                "{state:?}"
            );
        }
        assert_eq!(Outcome::Timeout.exit_code(), 6);
    }
}
