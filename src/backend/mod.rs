//! The backends, one folder each: how a kind of connection is opened,
//! pinged, reset and judged broken, and everything a user touches of it
//! (its config, its extractors, its errors). The pool core in `pool/` does
//! the rest, the same for all.
//!
//! | folder | feature | gives |
//! |---|---|---|
//! | [`diesel`] | `postgres`, `mysql`, `sqlite` | [`DbConfig`](crate::DbConfig), [`DbConn`](crate::DbConn), [`DbTx`](crate::DbTx), [`DbError`](crate::DbError) |
//! | `redis` | `redis` | `RedisConfig`, `RedisConn`, the distributed rate limiter's store |
//! | `http` | `http` | `HttpConfig`, `HttpClient` (outbound HTTP on tower parts) |

pub mod diesel;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "redis")]
pub mod redis;
