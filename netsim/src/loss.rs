//! Impairment of the NAT's WAN link. Loss is drawn here; the fixed delay is only reported to
//! the caller in each translation (the model does not queue). Where the draw happens is
//! [`Nat`](crate::Nat)'s business: a lost outbound datagram has still created or refreshed
//! its mapping, a lost inbound one never reached the NAT, a hairpinned one is drawn once.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One loss draw; no RNG use at all when loss is off, so loss-free runs keep the same
/// port choices whatever else changes.
pub(crate) fn lose(rng: &mut ChaCha8Rng, loss: f64) -> bool {
    // NaN (only reachable through an unvalidated config) means "no loss".
    if loss.is_nan() || loss <= 0.0 {
        return false;
    }
    rng.random::<f64>() < loss
}
