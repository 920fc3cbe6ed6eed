//! The wasmtime host's admin address (`--admin-listen`): where it is, and
//! its `/metrics` scraped and parsed (the Prometheus text format).

use std::collections::BTreeMap;

use crate::Host;

/// `http://ADDRESS` of the host's admin listener, from its log line.
pub async fn admin_url(host: &Host) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(url) = host.messages().iter().find_map(|l| l.split("metrics and health checks on ").nth(1).map(str::to_owned)) {
            return url.trim().to_owned();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no admin address in {:#?}", host.messages());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One scrape: each sample by its name and labels.
pub struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    pub async fn scrape(admin: &str) -> Samples {
        let response = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{admin}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        Samples::parse(&response.text().await.unwrap())
    }

    /// `name{label="value",...} number` lines; `#` lines are metadata.
    pub fn parse(text: &str) -> Samples {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"))),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("not a label: {pair:?} in {line:?}"));
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            samples.push((name.to_owned(), labels, value));
        }
        Samples(samples)
    }

    /// The sample `name` whose labels include `labels`, if exactly one has them.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.0.iter().filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)));
        let first = found.next()?;
        assert!(found.next().is_none(), "more than one {name} sample with {labels:?}");
        Some(first.2)
    }
}
