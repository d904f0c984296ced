//! What the benchmark measured and how it is shown: [`Results`] holds every run's value per
//! metric and configuration; [`Report`] renders them as the Markdown table (medians, per-run
//! spread, ratios to the kernel) or as JSON. Pure: it reads no clock and no file.

use super::args::{Config, Settings};
use super::stats::{median, spread};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A metric of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its key in the results and the JSON.
    pub key: &'static str,
    /// Its row label, unit included.
    pub label: &'static str,
    /// Decimals shown.
    pub decimals: usize,
    /// Whether a smaller value is better (a ratio above 1 is then worse).
    pub lower_is_better: bool,
}

const fn metric(
    key: &'static str,
    label: &'static str,
    decimals: usize,
    lower_is_better: bool,
) -> Metric {
    Metric {
        key,
        label,
        decimals,
        lower_is_better,
    }
}

/// Every metric, in table order.
pub const METRICS: [Metric; 10] = [
    metric("tcp1", "TCP 1 stream, Gbit/s", 2, false),
    metric("tcp4", "TCP 4 streams, Gbit/s", 2, false),
    metric("udp", "UDP 1400 B, max rate < 1% loss, Gbit/s", 2, false),
    metric("p50", "ping RTT p50, ms", 3, true),
    metric("p99", "ping RTT p99, ms", 3, true),
    metric("tcp1_flood", "TCP 1 stream under a flood, Gbit/s", 2, false),
    metric("flood_pps", "flood reached, datagrams/s", 0, false),
    metric("kept", "throughput kept under the flood, %", 1, false),
    metric("cpu_daemon", "CPU s/GB, vxtap daemons¹", 2, true),
    metric("cpu_machine", "CPU s/GB, whole machine²", 2, true),
];

/// Every run's value, per metric and configuration, in run order.
#[derive(Debug, Clone, Default)]
pub struct Results {
    values: BTreeMap<(&'static str, Config), Vec<f64>>,
}

impl Results {
    /// Records one run's `value` of `metric` for `config`.
    pub fn record(&mut self, metric: &'static str, config: Config, value: f64) {
        self.values.entry((metric, config)).or_default().push(value);
    }

    /// The values recorded, in run order (empty if none).
    pub fn values(&self, metric: &str, config: Config) -> &[f64] {
        self.values
            .iter()
            .find(|((m, c), _)| *m == metric && *c == config)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The median of `metric` for `config`.
    pub fn median(&self, metric: &str, config: Config) -> Option<f64> {
        median(self.values(metric, config))
    }

    /// `config`'s median over the kernel's, if both exist and the kernel's is not zero.
    pub fn ratio(&self, metric: &str, config: Config) -> Option<f64> {
        let kernel = self.median(metric, Config::Kernel)?;
        let value = self.median(metric, config)?;
        (kernel != 0.0).then(|| value / kernel)
    }

    /// The metrics with at least one value for one of `configs`, in table order.
    pub fn metrics(&self, configs: &[Config]) -> Vec<&'static Metric> {
        METRICS
            .iter()
            .filter(|m| configs.iter().any(|&c| !self.values(m.key, c).is_empty()))
            .collect()
    }
}

/// Facts about the machine and the run, for the header.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Header {
    /// The command line.
    pub command: String,
    /// When it started (UTC).
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// vxtap's version.
    pub version: String,
    /// The commit, if known.
    pub commit: Option<String>,
    /// Halt-polling settings seen (read-only): (what, value or "absent").
    pub halt_poll: Vec<(String, String)>,
    /// Load average at the start and the end.
    pub load: (String, String),
    /// Seconds the whole benchmark took.
    pub elapsed_seconds: u64,
}

/// Everything one benchmark produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// Machine and run facts.
    pub header: Header,
    /// What was asked.
    pub settings: Settings,
    /// What was measured.
    pub results: Results,
}

fn format_value(metric: &Metric, value: f64) -> String {
    format!("{value:.*}", metric.decimals)
}

impl Report {
    /// The configurations that get a ratio column: all but the kernel, if the kernel ran.
    fn ratio_configs(&self) -> Vec<Config> {
        let configs = &self.settings.configs;
        if configs.contains(&Config::Kernel) {
            configs
                .iter()
                .copied()
                .filter(|&c| c != Config::Kernel)
                .collect()
        } else {
            Vec::new()
        }
    }

    /// The Markdown report: header, then per metric and configuration the median with the
    /// per-run spread (min–max), then the ratios to the kernel.
    pub fn table(&self) -> String {
        let h = &self.header;
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "# vxtap overlay benchmark\n");
        let _ = writeln!(out, "- command: `{}`", h.command);
        let _ = writeln!(
            out,
            "- settings: {} s TCP tests, {} run(s), UDP {} x {} s probes (buffer {}), {} pings, flood {} at {} datagrams/s{}",
            s.duration,
            s.runs,
            s.udp_probes,
            s.udp_duration,
            s.udp_buffer,
            s.pings,
            serde_json::to_value(s.flood).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            s.flood_rate,
            s.threads.map(|t| format!(", {t} daemon threads")).unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "- machine: kernel {}, {} CPUs; load average at start {}, at end {}",
            h.kernel, h.cpus, h.load.0, h.load.1
        );
        let halt: Vec<String> = h
            .halt_poll
            .iter()
            .map(|(what, value)| format!("{what} = {value}"))
            .collect();
        let _ = writeln!(out, "- halt polling (read only): {}", halt.join("; "));
        let _ = writeln!(
            out,
            "- vxtap {} (commit {}); date {}; run time {} s\n",
            h.version,
            h.commit.as_deref().unwrap_or("unknown"),
            h.date,
            h.elapsed_seconds
        );
        let ratios = self.ratio_configs();
        let mut head = vec![format!(
            "metric: median (min–max) of {} run(s)",
            self.settings.runs
        )];
        head.extend(s.configs.iter().map(|c| c.name().to_owned()));
        head.extend(ratios.iter().map(|c| format!("{}/kernel", c.name())));
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(head.len() - 1));
        for metric in self.results.metrics(&s.configs) {
            let mut cells = vec![metric.label.to_owned()];
            for &config in &s.configs {
                let values = self.results.values(metric.key, config);
                cells.push(match (median(values), spread(values)) {
                    (Some(m), Some((lo, hi))) if values.len() > 1 => format!(
                        "{} ({}–{})",
                        format_value(metric, m),
                        format_value(metric, lo),
                        format_value(metric, hi)
                    ),
                    (Some(m), _) => format_value(metric, m),
                    _ => "–".to_owned(),
                });
            }
            for &config in &ratios {
                cells.push(match self.results.ratio(metric.key, config) {
                    Some(r) => format!("{r:.2}"),
                    None => "–".to_owned(),
                });
            }
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out.push_str(
            "\nRatios are medians over the kernel's; for ping and CPU, lower is better.\n",
        );
        let shown = |key: &str| {
            s.configs
                .iter()
                .any(|&c| !self.results.values(key, c).is_empty())
        };
        if shown("cpu_daemon") {
            out.push_str(
                "¹ utime+stime of every thread of the vxtap daemons (both hosts; host A only for\n  \
                 vxtap-kernel) over the 1-stream TCP test, per GB received. The kernel has no\n  \
                 daemon: its vxlan work runs in softirq, mixed with the TCP stacks.\n",
            );
        }
        if shown("cpu_machine") {
            out.push_str(
                "² /proc/stat system+irq+softirq of all cores over the same test, per GB: coarser,\n  \
                 it includes both TCP stacks, veth, bridge and any other load, and excludes\n  \
                 vxtap's user time.\n",
            );
        }
        if shown("kept") {
            out.push_str(
                "The flood: an unknown host on a link of its own to host B sends the flood rate of\n\
                 datagrams (half garbage, half VXLAN for VNI 42 from an unknown VTEP) at host B's\n\
                 port 4789 during a second 1-stream TCP test; kept = that test over the first.\n",
            );
        }
        out
    }

    /// The same data as JSON: header, settings, and per metric and configuration every run's
    /// value, the median, min, max and ratio to the kernel.
    pub fn json(&self) -> serde_json::Value {
        let configs = &self.settings.configs;
        let metrics: Vec<serde_json::Value> = self
            .results
            .metrics(configs)
            .into_iter()
            .map(|metric| {
                let per_config: serde_json::Map<String, serde_json::Value> = configs
                    .iter()
                    .filter(|&&c| !self.results.values(metric.key, c).is_empty())
                    .map(|&c| {
                        let values = self.results.values(metric.key, c);
                        let (min, max) = spread(values).unzip();
                        (
                            c.name().to_owned(),
                            serde_json::json!({
                                "runs": values,
                                "median": median(values),
                                "min": min,
                                "max": max,
                                "ratio_to_kernel": self.results.ratio(metric.key, c),
                            }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "metric": metric.key,
                    "label": metric.label,
                    "lower_is_better": metric.lower_is_better,
                    "configs": per_config,
                })
            })
            .collect();
        serde_json::json!({
            "header": self.header,
            "settings": self.settings,
            "metrics": metrics,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::args::FloodMode;

    /// Two runs of kernel and vxtap with fixed values.
    pub(crate) fn sample() -> Report {
        let mut results = Results::default();
        for (metric, kernel, vxtap) in [
            ("tcp1", [14.0, 14.4], [7.8, 7.9]),
            ("tcp4", [22.0, 23.0], [8.5, 8.6]),
            ("udp", [1.2, 1.1], [0.9, 0.8]),
            ("p50", [0.09, 0.1], [0.29, 0.3]),
            ("p99", [0.2, 0.3], [0.5, 0.6]),
            ("cpu_machine", [0.8, 0.7], [1.5, 1.6]),
        ] {
            for run in 0..2 {
                results.record(metric, Config::Kernel, kernel[run]);
                results.record(metric, Config::Vxtap, vxtap[run]);
            }
        }
        results.record("cpu_daemon", Config::Vxtap, 1.27);
        results.record("cpu_daemon", Config::Vxtap, 1.31);
        Report {
            header: Header {
                command: "vxtap bench".into(),
                date: "2026-12-07 03:00:00 UTC".into(),
                kernel: "6.1.0".into(),
                cpus: 2,
                version: "0.1.0".into(),
                commit: Some("abc1234".into()),
                halt_poll: vec![(
                    "/sys/module/haltpoll/parameters/guest_halt_poll_ns".into(),
                    "absent".into(),
                )],
                load: ("0.10".into(), "1.50".into()),
                elapsed_seconds: 42,
            },
            settings: Settings {
                configs: vec![Config::Kernel, Config::Vxtap],
                duration: 5,
                runs: 2,
                flood: FloodMode::Off,
                flood_rate: 150_000,
                threads: None,
                udp_duration: 2,
                udp_probes: 4,
                udp_buffer: "4M".into(),
                pings: 200,
            },
            results,
        }
    }

    #[test]
    fn the_table_shows_medians_spreads_and_ratios() {
        let table = sample().table();
        assert!(
            table.contains(
                "| metric: median (min–max) of 2 run(s) | kernel | vxtap | vxtap/kernel |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| TCP 1 stream, Gbit/s | 14.20 (14.00–14.40) | 7.85 (7.80–7.90) | 0.55 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| CPU s/GB, vxtap daemons¹ | – | 1.29 (1.27–1.31) | – |"),
            "{table}"
        );
        assert!(table.contains("guest_halt_poll_ns = absent"), "{table}");
        assert!(table.contains("commit abc1234"), "{table}");
        // No flood figures were recorded, so no flood rows.
        assert!(!table.contains("under a flood"), "{table}");
    }

    #[test]
    fn the_json_holds_every_run() {
        let json = sample().json();
        let tcp1 = &json["metrics"][0];
        assert_eq!(tcp1["metric"], "tcp1");
        assert_eq!(
            tcp1["configs"]["kernel"]["runs"],
            serde_json::json!([14.0, 14.4])
        );
        assert_eq!(tcp1["configs"]["vxtap"]["min"], 7.8);
        let ratio = tcp1["configs"]["vxtap"]["ratio_to_kernel"]
            .as_f64()
            .unwrap();
        assert!((ratio - 7.85 / 14.2).abs() < 1e-9);
        assert_eq!(
            json["settings"]["configs"],
            serde_json::json!(["kernel", "vxtap"])
        );
        assert_eq!(json["header"]["cpus"], 2);
        let daemon = json["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == "cpu_daemon")
            .unwrap();
        assert!(daemon["configs"].get("kernel").is_none());
    }
}
