//! Bubble pacing (RFC 4380 §5.2.6, §5.4.1): at least `interval` between two bubbles to a
//! peer, at most `max_per_window` bubbles per `window` without an answer.

use super::Time;

/// The pacing settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing<S> {
    /// Minimum spacing of bubbles to one peer (2 s).
    pub interval: S,
    /// Window of the bubble cap (300 s).
    pub window: S,
    /// Bubbles per window without an answer (4).
    pub max_per_window: u8,
}

/// What the pacing rules allow now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate<T> {
    /// Send a bubble now.
    Now,
    /// Not before this time (the interval since the last bubble is not over).
    At(T),
    /// The window's budget is spent: give up until the window is over.
    Exhausted,
}

/// Whether the window that started at `start` is over at `now` (never, if its end is past
/// the representable times).
pub fn window_over<T: Time>(now: T, start: T, window: T::Span) -> bool {
    start.after(window).is_some_and(|end| now >= end)
}

/// May a bubble go to the peer now? `sent` (bubbles in the window that started at
/// `window_start`) is reset when that window is over; `last` is the last bubble sent.
pub fn gate<T: Time>(
    now: T,
    p: &Pacing<T::Span>,
    window_start: T,
    sent: &mut u8,
    last: Option<T>,
) -> Gate<T> {
    if *sent > 0 && window_over(now, window_start, p.window) {
        *sent = 0;
    }
    if *sent >= p.max_per_window {
        return Gate::Exhausted;
    }
    match last.map(|l| l.after(p.interval)) {
        Some(Some(at)) if now < at => Gate::At(at),
        Some(None) => Gate::Exhausted,
        _ => Gate::Now,
    }
}

/// The first bubble of a window starts it (RFC 4380 §5.2.6 counts bubbles sent without an
/// answer over the window that follows the first): `window_start` becomes `now` when the
/// window holds no bubble yet. A give-up calls it too, so that a peer refused before any
/// bubble went out is refused for a whole window. Any time representation will do (the
/// relay stores 32-bit offsets).
pub fn start_window<T: Copy>(now: T, window_start: &mut T, sent: u8) {
    if sent == 0 {
        *window_start = now;
    }
}

/// Counts a bubble sent at `now` in the window ([`start_window`] first).
pub fn count_bubble<T: Copy>(now: T, window_start: &mut T, sent: &mut u8) {
    start_window(now, window_start, *sent);
    *sent = sent.saturating_add(1);
}

/// Bubbles one exchange may send before it gives up: the first plus `retries`
/// repetitions, never more than the window allows.
pub fn attempt_limit(retries: u8, max_per_window: u8) -> u8 {
    retries.saturating_add(1).min(max_per_window)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const P: Pacing<u64> = Pacing {
        interval: 2_000,
        window: 300_000,
        max_per_window: 4,
    };

    #[test]
    fn interval_then_cap_then_new_window() {
        let mut sent = 0;
        assert_eq!(gate(0, &P, 0, &mut sent, None), Gate::Now);
        sent = 1;
        assert_eq!(gate(1_000, &P, 0, &mut sent, Some(0)), Gate::At(2_000));
        assert_eq!(gate(2_000, &P, 0, &mut sent, Some(0)), Gate::Now);
        sent = 4;
        assert_eq!(gate(8_000, &P, 0, &mut sent, Some(6_000)), Gate::Exhausted);
        assert_eq!(sent, 4);
        // The window is over: the count starts again.
        assert_eq!(gate(300_000, &P, 0, &mut sent, Some(6_000)), Gate::Now);
        assert_eq!(sent, 0);
    }

    #[test]
    fn works_on_instants_and_overflow_is_never() {
        #[allow(clippy::disallowed_methods)] // any instant will do
        let t0 = Instant::now();
        let p = Pacing {
            interval: Duration::from_secs(2),
            window: Duration::from_secs(300),
            max_per_window: 4,
        };
        let mut sent = 1;
        let at = t0 + Duration::from_secs(2);
        assert_eq!(gate(t0, &p, t0, &mut sent, Some(t0)), Gate::At(at));
        let mut sent = 1;
        assert_eq!(gate(5, &P, 0, &mut sent, Some(u64::MAX)), Gate::Exhausted);
        assert!(!window_over(5u64, u64::MAX, 1));
        assert!(!window_over(5u64, 0, 10));
    }

    #[test]
    fn the_first_bubble_starts_the_window() {
        let (mut start, mut sent) = (0u32, 0);
        count_bubble(7, &mut start, &mut sent);
        count_bubble(9, &mut start, &mut sent);
        assert_eq!((start, sent), (7, 2));
        start_window(11, &mut start, sent);
        assert_eq!(start, 7);
        start_window(11, &mut start, 0);
        assert_eq!(start, 11);
        let mut sent = u8::MAX;
        count_bubble(12, &mut start, &mut sent);
        assert_eq!((start, sent), (11, u8::MAX));
    }

    #[test]
    fn attempts_are_capped_by_the_window() {
        assert_eq!(attempt_limit(3, 4), 4);
        assert_eq!(attempt_limit(9, 4), 4);
        assert_eq!(attempt_limit(0, 4), 1);
        assert_eq!(attempt_limit(u8::MAX, u8::MAX), u8::MAX);
    }
}
