//! The oracle itself checked against independent computations over the same log, so that the
//! byte-for-byte comparisons of cluster runs compare against right answers.

mod support;

use std::collections::{BTreeMap, HashMap};

use support::*;

const GRAMMAR: &str = r#"(?-u)^[0-9A-Fa-f:.]+ - (-|u[0-9]+) \[[0-9]+/[A-Za-z]+/[0-9]+:[0-9]+:[0-9]+:[0-9]+ [+-][0-9]+\] "([A-Z]+) ([^ "]+) HTTP/[0-9.]+" ([0-9]+) ([0-9]+|-) "[^"]*" "[^"]*" [0-9]+$"#;

fn lines(path: &std::path::Path) -> String {
    let out = read_output(path);
    out.iter()
        .filter(|(k, _)| k.starts_with("part-"))
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect()
}

#[test]
fn views_top_photos_and_malformed_counts_match_a_plain_computation() {
    let inputs = inputs("2MiB");
    let data = std::fs::read(&inputs.log).unwrap();
    let re = regex::bytes::Regex::new(GRAMMAR).unwrap();
    let photo = regex::bytes::Regex::new(r"^/photos/([0-9]+)\.jpg(\?.*)?$").unwrap();
    let mut views: BTreeMap<u64, u64> = BTreeMap::new();
    let mut per_user: HashMap<String, HashMap<u64, u64>> = HashMap::new();
    let mut malformed = 0u64;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(c) = re.captures(line) else {
            malformed += 1;
            continue;
        };
        if &c[2] == b"GET" && &c[4] == b"200" {
            if let Some(p) = photo.captures(&c[3]) {
                let id: u64 = std::str::from_utf8(&p[1]).unwrap().parse().unwrap();
                *views.entry(id).or_default() += 1;
                if &c[1] != b"-" {
                    *per_user
                        .entry(String::from_utf8(c[1].to_vec()).unwrap())
                        .or_default()
                        .entry(id)
                        .or_default() += 1;
                }
            }
        }
    }
    let out = inputs.dir.path().join("views");
    let stdout = ok(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out)
        .args(["--reducers", "3", "--split-size", "100KiB"]));
    assert_eq!(counters(&stdout)["malformed_records"], malformed);
    assert!(malformed > 0, "the generator writes malformed lines");
    let mut got: Vec<(u64, u64)> = lines(&out)
        .lines()
        .map(|l| {
            let (p, v) = l.split_once('\t').unwrap();
            (p.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(got, views.into_iter().collect::<Vec<_>>());

    let out = inputs.dir.path().join("top");
    ok(quern()
        .args(["run", "--local", "top-photos", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out)
        .args(["--reducers", "2", "--param", "n=3"]));
    let mut expected = Vec::new();
    for (user, photos) in per_user {
        let mut v: Vec<(u64, u64)> = photos.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        expected.extend(
            v.into_iter()
                .take(3)
                .map(|(p, n)| format!("{user}\t{p}\t{n}")),
        );
    }
    expected.sort();
    let mut got: Vec<String> = lines(&out).lines().map(str::to_string).collect();
    // Within a part file users come out in key order, and per user in rank order.
    for part in read_output(&out)
        .iter()
        .filter(|(k, _)| k.starts_with("part-"))
    {
        let text = String::from_utf8(part.1.clone()).unwrap();
        let users: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert!(
            users.windows(2).all(|w| w[0] <= w[1]),
            "keys out of order in {}",
            part.0
        );
    }
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn wordcount_and_endpoint_stats_match_a_plain_computation() {
    let inputs = inputs("1MiB");
    // The generated text is UTF-8 with a few accented letters and curly quotes, and no
    // combining marks: words are runs of alphabetic characters.
    let text = std::fs::read_to_string(&inputs.words).unwrap();
    let mut words: BTreeMap<String, u64> = BTreeMap::new();
    for w in text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
    {
        *words.entry(w.to_lowercase()).or_default() += 1;
    }
    let out = inputs.dir.path().join("wc");
    ok(quern()
        .args(["run", "--local", "wordcount", "--input"])
        .arg(&inputs.words)
        .arg("--output")
        .arg(&out)
        .args(["--split-size", "64KiB"]));
    let expected: String = words.iter().map(|(w, n)| format!("{w}\t{n}\n")).collect();
    assert_eq!(lines(&out), expected);

    let out = inputs.dir.path().join("endpoints");
    ok(quern()
        .args(["run", "--local", "endpoint-stats", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out));
    let data = std::fs::read(&inputs.log).unwrap();
    let re = regex::bytes::Regex::new(GRAMMAR).unwrap();
    let wellformed = data
        .split(|&b| b == b'\n')
        .filter(|l| re.is_match(l))
        .count() as u64;
    let report = lines(&out);
    let mut total = 0;
    for l in report.lines() {
        let f: Vec<u64> = l.split('\t').skip(1).map(|x| x.parse().unwrap()).collect();
        assert_eq!(f.len(), 8, "{l}");
        assert!(f[1] + f[2] + f[3] + f[4] <= f[0], "{l}");
        assert!(f[5] <= f[6] && f[6] <= f[7], "quantiles ordered: {l}");
        total += f[0];
    }
    assert_eq!(total, wellformed);
    assert!(
        report.starts_with("api\t")
            && report.contains("\nphoto\t")
            && report.contains("\nupload\t"),
        "{report}"
    );
}
