//! What an I/O failure says about the storage under the gateway, so that every front door
//! answers a full disk (507) or an unusable one (503) the same way, and nothing else as those.

/// What an I/O failure says about the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// No space or quota left (ENOSPC, EDQUOT, EFBIG).
    Full,
    /// Read-only, not permitted, missing or failing (EROFS, EACCES, EPERM, ENOENT, EIO).
    Unavailable,
}

impl StorageFault {
    /// The fault an I/O error is, if it is one of these.
    pub fn of_io(e: &std::io::Error) -> Option<Self> {
        match e.raw_os_error()? {
            28 | 122 | 27 => Some(Self::Full),
            30 | 13 | 1 | 2 | 5 => Some(Self::Unavailable),
            _ => None,
        }
    }

    /// The fault of the first I/O error in `e`'s chain of causes, if any.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>()
                && let Some(fault) = Self::of_io(io)
            {
                return Some(fault);
            }
            cause = c.source();
        }
        None
    }
}
