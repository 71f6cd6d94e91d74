//! Backends: how each kind of connection is opened, pinged and judged
//! broken. One file a backend; the pool core in `pool/` does the rest.

pub(crate) mod diesel;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "redis")]
pub mod redis;
