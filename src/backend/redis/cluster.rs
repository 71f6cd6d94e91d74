//! Redis Cluster: the `redis+cluster://` URL form, and the topology the
//! stats show.

use std::collections::BTreeMap;

/// The node URLs of a `redis+cluster://[user:password@]h1:p1,h2:p2/` (or
/// `rediss+cluster://`) URL, each in the redis crate's one-node form with
/// the credentials and query; `None` for any other URL. The error never
/// shows the credentials.
///
/// A cluster has database 0 only: `/0` or no path.
pub(super) fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let parts = super::url::hosts(rest);
    let (credentials, path, query) = (&parts.credentials, parts.path, &parts.query);
    if !path.is_empty() && path != "0" {
        return Err(format!(
            "redis+cluster: database {path}: a Redis Cluster has database 0 only; drop /{path} from the URL"
        ));
    }
    let nodes: Vec<String> = parts
        .hosts
        .iter()
        .map(|host| format!("{scheme}://{credentials}{host}/{query}"))
        .collect();
    if nodes.is_empty() {
        return Err(
            "redis+cluster: name the nodes to start from, e.g. redis+cluster://h1:6379,h2:6379,h3:6379/"
                .to_owned(),
        );
    }
    Ok(Some(nodes))
}

/// The facts of `CLUSTER INFO` and `CLUSTER NODES` the stats show: the
/// state, the slots assigned, and the masters and replicas by address.
pub(super) fn topology(info: &str, nodes: &str) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::from([("redis_mode".to_owned(), "cluster".to_owned())]);
    for (key, name) in [
        ("cluster_state", "cluster_state"),
        ("cluster_slots_assigned", "slots_assigned"),
        ("cluster_slots_fail", "slots_fail"),
        ("cluster_known_nodes", "known_nodes"),
    ] {
        if let Some(value) = info
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find_map(|(k, v)| (k == key).then(|| v.trim().to_owned()))
        {
            facts.insert(name.to_owned(), value);
        }
    }
    let (mut masters, mut replicas) = (Vec::new(), Vec::new());
    for line in nodes.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // `ip:port@cport[,hostname]`
        let address = address.split('@').next().unwrap_or(address).to_owned();
        let flags: Vec<&str> = flags.split(',').collect();
        let address = if flags.iter().any(|f| *f == "fail" || *f == "fail?") {
            format!("{address}(failing)")
        } else {
            address
        };
        if flags.contains(&"master") {
            masters.push(address);
        } else if flags.contains(&"slave") {
            replicas.push(address);
        }
    }
    masters.sort();
    replicas.sort();
    facts.insert("masters".to_owned(), masters.join(" "));
    facts.insert("replicas".to_owned(), replicas.join(" "));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_node_urls_and_refuse_a_database() {
        assert_eq!(cluster_nodes("redis://h:1/0").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@h1:1, h2:2/?protocol=resp3").unwrap(),
            Some(vec![
                "redis://u:p@h1:1/?protocol=resp3".to_owned(),
                "redis://u:p@h2:2/?protocol=resp3".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1:1/0").unwrap(),
            Some(vec!["rediss://h1:1/".to_owned()])
        );
        let e = cluster_nodes("redis+cluster://:s3cret@h1:1,h2:2/2").unwrap_err();
        assert!(e.contains("database 0 only; drop /2"), "{e}");
        assert!(!e.contains("s3cret"));
        let e = cluster_nodes("redis+cluster://:s3cret@/").unwrap_err();
        assert!(e.contains("name the nodes"), "{e}");
        assert!(!e.contains("s3cret"));
    }

    #[test]
    fn the_topology_names_masters_and_replicas() {
        let info = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_fail:0\r\ncluster_known_nodes:4\r\n";
        let nodes = "\
a 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d 127.0.0.1:7004@17004 slave a 0 0 1 connected
";
        let facts = topology(info, nodes);
        assert_eq!(facts["cluster_state"], "ok");
        assert_eq!(facts["slots_assigned"], "16384");
        assert_eq!(facts["known_nodes"], "4");
        assert_eq!(
            facts["masters"],
            "127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003(failing)"
        );
        assert_eq!(facts["replicas"], "127.0.0.1:7004");
    }
}
