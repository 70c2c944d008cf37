//! Teredo client simulator: client profiles behind a simulated NAT and the in-process lab.

pub mod nat;
