//! Whether a component uses its fast path: the one choice behind the server's and the relay's
//! `--fast-path none|xdp|auto`.

/// Whether packets are handled in the kernel (XDP) before user space sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FastPathMode {
    /// Everything goes to the user-space component.
    #[default]
    None,
    /// Attach the XDP program; failing that, the component does not start, and says why.
    Xdp,
    /// As `Xdp` where it can be set up; otherwise `None`, with the reason logged as one line.
    Auto,
}

impl FastPathMode {
    /// `none`, `xdp` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Xdp => "xdp",
            Self::Auto => "auto",
        }
    }
}
