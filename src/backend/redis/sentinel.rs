//! Redis Sentinel: the `redis+sentinel://` URL form, and finding the
//! current master for each new connection.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};

/// A pool behind Sentinel: the sentinels to ask, the master's name, how to
/// log in to it, and the master seen last.
pub(super) struct Sentinels {
    sentinel: tokio::sync::Mutex<Sentinel>,
    name: String,
    node: SentinelNodeConnectionInfo,
    pub(super) db: i64,
    /// `host:port` of the master the last connection went to.
    current: Mutex<Option<String>>,
    failovers: AtomicU64,
}

impl Sentinels {
    /// From `redis+sentinel://[user:password@]s1:p1,s2:p2/name[/db]`;
    /// `None` for any other URL. The credentials and database are the
    /// master's; the sentinels are asked without them. The error never
    /// shows the credentials.
    pub(super) fn parse(url: &str) -> Result<Option<Self>, String> {
        if url.starts_with("rediss+sentinel://") {
            return Err(
                "rediss+sentinel:// is not supported yet: reach the sentinels and the master over \
                 redis+sentinel:// (plaintext), or use a rediss:// URL of the master"
                    .to_owned(),
            );
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return Ok(None);
        };
        let parts = super::url::hosts(rest);
        let (credentials, path, query) = (&parts.credentials, parts.path, &parts.query);
        let mut path = path.split('/').filter(|s| !s.is_empty());
        let usage = "e.g. redis+sentinel://s1:26379,s2:26379/mymaster or …/mymaster/2";
        let Some(name) = path.next() else {
            return Err(format!(
                "redis+sentinel: name the master after the hosts, {usage}"
            ));
        };
        let db = match path.next() {
            None => "0",
            Some(db) if db.parse::<i64>().is_ok() => db,
            Some(db) => {
                return Err(format!(
                    "redis+sentinel: database {db:?} is not a number, {usage}"
                ));
            }
        };
        let sentinels: Vec<String> = parts
            .hosts
            .iter()
            .map(|h| format!("redis://{h}/"))
            .collect();
        if sentinels.is_empty() {
            return Err(format!("redis+sentinel: name the sentinels, {usage}"));
        }
        // How to log in to whichever master: the redis crate's parse of a
        // one-server URL with these credentials, database and query.
        let template = redis::Client::open(format!("redis://{credentials}localhost/{db}{query}"))
            .map_err(|e| format!("redis+sentinel: {e}"))?;
        let settings = template.get_connection_info().redis_settings().clone();
        let sentinel = Sentinel::build(sentinels).map_err(|e| format!("redis+sentinel: {e}"))?;
        Ok(Some(Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            name: name.to_owned(),
            db: settings.db(),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(settings),
            current: Mutex::new(None),
            failovers: AtomicU64::new(0),
        }))
    }

    /// A client of the current master: the sentinels name it, and it says
    /// it is a master (`ROLE`). A change of master is logged and counted.
    pub(super) async fn master(&self, pool: &str) -> redis::RedisResult<redis::Client> {
        let client = self
            .sentinel
            .lock()
            .await
            .async_master_for(&self.name, Some(&self.node))
            .await?;
        let address = client.get_connection_info().addr().to_string();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = current.as_ref().filter(|before| **before != address) {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pool, master = %self.name, from = %before, to = %address, "redis master changed");
        }
        *current = Some(address);
        Ok(client)
    }

    /// The changes of master seen.
    pub(super) fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The master's name, its address last seen and the changes counted.
    pub(super) fn facts(&self) -> [(String, String); 3] {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        [
            ("sentinel_master".to_owned(), self.name.clone()),
            ("master".to_owned(), current.unwrap_or_default()),
            (
                "failovers".to_owned(),
                self.failovers.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_master_and_refuse_what_they_cannot_mean() {
        assert!(Sentinels::parse("redis://h:1/0").unwrap().is_none());
        let s = Sentinels::parse("redis+sentinel://:s3cret@s1:1,s2:2/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!((s.name.as_str(), s.db), ("mymaster", 3));
        for (url, says) in [
            ("redis+sentinel://:s3cret@s1:1/", "name the master"),
            ("redis+sentinel://:s3cret@/m", "name the sentinels"),
            ("redis+sentinel://:s3cret@s1:1/m/x", "is not a number"),
            ("rediss+sentinel://:s3cret@s1:1/m", "not supported yet"),
        ] {
            let e = Sentinels::parse(url).err().unwrap();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
