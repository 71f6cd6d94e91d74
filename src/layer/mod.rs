//! Tower layers. [`PoolLayer`] makes the [`PoolManager`](crate::PoolManager)
//! reachable from every request so the extractors can lease from it.

mod pool;

pub use self::pool::{PoolLayer, PoolService};
