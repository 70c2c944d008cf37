//! What a conformance check is: its identity, the clause it enforces and how much a failure
//! counts. The checks themselves live in [`super::server`] and [`super::relay`].

use serde::Serialize;

use super::ctx::Ctx;
use super::outcome::Outcome;

/// How much a failure counts (RFC 2119 keywords, plus interoperability with the two client
/// families users meet in the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// An RFC MUST / MUST NOT: a failure makes the exit status 1.
    Must,
    /// An RFC SHOULD: counts only with `--strict`.
    Should,
    /// What Windows clients need (not written in an RFC); counts only with `--strict`.
    InteropWindows,
    /// What Miredo clients or relays need; counts only with `--strict`.
    InteropMiredo,
}

impl Level {
    /// The label in the table, the JSON and the JUnit file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
            Self::InteropWindows => "interop-windows",
            Self::InteropMiredo => "interop-miredo",
        }
    }

    /// True when a failure at this level fails the run.
    pub fn counts(self, strict: bool) -> bool {
        self == Self::Must || strict
    }
}

/// Which device a check tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Teredo server (`--server`).
    Server,
    /// A Teredo relay (`--relay`).
    Relay,
}

impl Role {
    /// `server` or `relay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Relay => "relay",
        }
    }
}

/// The description of one check: everything the report says about it besides the result.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spec {
    /// Stable id: `S01`–`S15` and `R16`–`R20` are the numbered checks of the protocol
    /// digest (TEREDO.md (b)); higher numbers are the checks added beside them.
    pub id: &'static str,
    /// Device under test.
    pub role: Role,
    /// One line.
    pub title: &'static str,
    /// The RFC and section, e.g. "RFC 4380 §5.3.2".
    pub rfc: &'static str,
    /// The clause enforced, quoted (or, for interop levels, the client behaviour relied on).
    pub clause: &'static str,
    /// How much a failure counts.
    pub level: Level,
    /// What the check sends.
    pub sends: &'static str,
    /// What it expects.
    pub expects: &'static str,
}

/// A check: its description and the code that runs it.
#[derive(Clone, Copy)]
pub struct Check {
    /// What it is.
    pub spec: Spec,
    /// Runs it against the target in `ctx`. An `Err` is the tool's own failure (a socket it
    /// could not open), reported as `error`, never as a pass.
    pub run: fn(&mut Ctx<'_>) -> anyhow::Result<Outcome>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("id", &self.spec.id).finish()
    }
}
