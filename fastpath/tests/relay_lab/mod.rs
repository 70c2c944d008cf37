//! The relay lab of `relay_differential.rs`: frames, the kernel's model, the namespace and
//! the cores, the cases.

pub(crate) mod cases;
pub(crate) mod frames;
pub(crate) mod kernel;
pub(crate) mod lab;
