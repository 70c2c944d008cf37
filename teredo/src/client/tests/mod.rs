//! Tests of the client core: qualification against a real server over a fake NAT, and the
//! data path between clients, the server, a relay and a native host.

mod data;
mod discovery;
mod hairpin;
mod load_reduction;
mod net;
mod qualification;
mod random_port;
mod upnp;
