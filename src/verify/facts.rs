//! The `facts` query's answer as the key/value list `debug` shows. The
//! inspector sends `/proc/uptime`, `/proc/loadavg`, `/proc/meminfo` and
//! `df -Pk /` as they are (less code on every instance); respot reads the
//! numbers here, and keeps the inspector's own `kv` records.

use std::collections::BTreeMap;

use super::query::Reply;

/// Every fact, by name: `uptime_secs`, `load`, `mem_total_kib`,
/// `mem_available_kib`, `disk_root_kib`, `disk_root_used_kib`,
/// `disk_root_avail_kib` (those the host gave), and the `kv` records
/// (kernel, instance id, who runs the inspector).
pub fn facts(reply: &Reply) -> BTreeMap<String, String> {
    let mut facts: BTreeMap<String, String> = reply.kvs().into_iter().collect();
    let first = |block: &str| reply.text(block).into_iter().next().unwrap_or_default();
    let uptime = first("uptime");
    if let Some(secs) = uptime.split(['.', ' ']).next().filter(|s| is_number(s)) {
        facts.insert("uptime_secs".into(), secs.into());
    }
    let loadavg = first("loadavg");
    let load: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    if load.len() == 3 {
        facts.insert("load".into(), load.join(" "));
    }
    for line in reply.text("meminfo") {
        let mut words = line.split_whitespace();
        let key = match words.next() {
            Some("MemTotal:") => "mem_total_kib",
            Some("MemAvailable:") => "mem_available_kib",
            _ => continue,
        };
        if let (Some(kib), Some("kB")) = (words.next(), words.next()) {
            facts.insert(key.into(), kib.into());
        }
    }
    // `df -P`: a header, then one line; a long device name stays on it.
    if let Some(line) = reply.text("df").get(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let keys = ["disk_root_kib", "disk_root_used_kib", "disk_root_avail_kib"];
        for (key, value) in keys.iter().zip(words.iter().skip(1)) {
            if is_number(value) {
                facts.insert((*key).into(), (*value).into());
            }
        }
    }
    facts
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::query::Query;

    #[test]
    fn numbers_are_read_from_the_hosts_own_files() {
        let raw = "respot-inspect\t1\tfacts\n\
                   text\tuptime\t3605.20 7000.11\n\
                   text\tloadavg\t0.15 0.20 0.25 1/123 4567\n\
                   text\tmeminfo\tMemTotal:        2014000 kB\n\
                   text\tmeminfo\tMemFree:          100000 kB\n\
                   text\tmeminfo\tMemAvailable:    1500000 kB\n\
                   text\tdf\tFilesystem     1024-blocks    Used Available Capacity Mounted on\n\
                   text\tdf\t/dev/vda1         10000000 2500000   7000000      27% /\n\
                   kv\tkernel\t6.1.0-28-cloud-amd64\n\
                   kv\tinspector_user\trespot-verify\n\
                   end\tok\n";
        let facts = facts(&Reply::parse(&Query::Facts, raw.as_bytes()).unwrap());
        let want = [
            ("disk_root_avail_kib", "7000000"),
            ("disk_root_kib", "10000000"),
            ("disk_root_used_kib", "2500000"),
            ("inspector_user", "respot-verify"),
            ("kernel", "6.1.0-28-cloud-amd64"),
            ("load", "0.15 0.20 0.25"),
            ("mem_available_kib", "1500000"),
            ("mem_total_kib", "2014000"),
            ("uptime_secs", "3605"),
        ];
        let got: Vec<(&str, &str)> = facts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn what_a_host_does_not_give_is_left_out() {
        let raw = "respot-inspect\t1\tfacts\ntext\tuptime\tsoon\ntext\tloadavg\t1\n\
                   text\tmeminfo\tMemTotal: lots\ntext\tdf\tonly a header\nend\tok\n";
        let facts = facts(&Reply::parse(&Query::Facts, raw.as_bytes()).unwrap());
        assert!(facts.is_empty(), "{facts:?}");
    }
}
