//! POSIX error numbers returned by every core operation.

use std::fmt;

/// A POSIX `errno` value (positive), e.g. [`Errno::ENOENT`].
///
/// The core never panics on bad input; every failure is one of these, and the
/// FUSE adapter passes `.0` straight to the kernel.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

/// Result type of every core operation.
pub type Result<T, E = Errno> = std::result::Result<T, E>;

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(#[doc = concat!("`", stringify!($name), "`")]
            pub const $name: Errno = Errno(libc::$name);)*
        }
        fn errno_name(code: i32) -> Option<&'static str> {
            $(if code == libc::$name { return Some(stringify!($name)); })*
            None
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    EIO,
    EBADF,
    EACCES,
    EEXIST,
    EXDEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    EFBIG,
    ENOSPC,
    EROFS,
    EMLINK,
    ERANGE,
    ENAMETOOLONG,
    ENOTEMPTY,
    ENODATA,
    EOPNOTSUPP,
    E2BIG,
    ENXIO,
    ELOOP,
    EOVERFLOW,
    ENOSYS,
    EUCLEAN,
    ENODEV,
);

impl Errno {
    /// The raw errno value, as FUSE wants it.
    pub fn code(self) -> i32 {
        self.0
    }

    /// Same as [`Errno::code`]; named like `atomic_api::Error::errno`.
    pub fn errno(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno_name(self.0) {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.0);
        write!(f, "{self:?}: {text}")
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}
