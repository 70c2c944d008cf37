//! Writers for the harness input format read by [`super::Input`], for building seed corpora
//! from captures (and regression inputs by hand).

use std::net::SocketAddrV4;
use std::time::Duration;

/// Appends a chunk: big-endian u16 length, then the bytes (at most 65,535 of them).
pub fn chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..n]);
}

/// Appends a socket address: 4 address bytes, 2 port bytes.
pub fn addr(out: &mut Vec<u8>, a: SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Appends a clock step as [`super::Input::step`] reads it, in the finest unit that holds
/// it (rounded down).
pub fn step(out: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis();
    let (unit, n) = if ms <= 0xffff {
        (0u8, ms)
    } else if ms / 100 <= 0xffff {
        (1, ms / 100)
    } else if ms / 1000 <= 0xffff {
        (2, ms / 1000)
    } else {
        (3, (ms / 60_000).min(0xffff))
    };
    out.push(unit << 6);
    out.extend_from_slice(&(n as u16).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::Input;
    use super::*;

    #[test]
    fn encoded_values_decode() {
        let mut v = Vec::new();
        chunk(&mut v, b"abc");
        addr(&mut v, "198.51.100.1:3544".parse().unwrap());
        step(&mut v, Duration::from_secs(2));
        step(&mut v, Duration::from_millis(1500));
        let mut i = Input::new(&v);
        assert_eq!(i.chunk(), b"abc");
        assert_eq!(i.addr(), "198.51.100.1:3544".parse().unwrap());
        assert_eq!(i.step(), Duration::from_secs(2));
        assert_eq!(i.step(), Duration::from_millis(1500));
        assert!(i.is_empty());
        assert_eq!(i.u32(), 0, "past the end reads zeros");
    }
}
