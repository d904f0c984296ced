//! `vxtap bench`'s flags and what they turn into: the configurations to compare, how long
//! and how often to measure. Parsing and validation only; nothing here runs anything.

use super::BenchError;
use std::path::PathBuf;

/// `vxtap bench`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of each TCP test.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Runs; each builds every configuration from scratch, in an order rotated by one.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Configurations to compare, comma-separated: kernel, vxtap, vxtap-off (offloads
    /// off), vxtap-kernel (vxtap on host A, kernel on host B), vxtap-nofilter (the
    /// underlay filter off), vxtap-busypoll (workers poll 200 us after traffic).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,vxtap,vxtap-off,vxtap-kernel"
    )]
    pub configs: Vec<String>,
    /// Print the results as JSON (every run's value included) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a chart of the ratios to the kernel as a self-contained SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The flood test (TCP 1 stream while an unknown host floods host B): on, off, or only
    /// (just the two TCP tests).
    #[arg(long, value_name = "on|off|only", default_value = "on")]
    pub flood: String,
    /// Datagrams a second the unknown host sends.
    #[arg(long, default_value_t = 150_000)]
    pub flood_rate: u64,
    /// Worker threads of each vxtap daemon (default: the daemon's own, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds of each UDP probe.
    #[arg(long, default_value_t = 2, hide = true)]
    pub udp_duration: u64,
    /// UDP probes per bisection.
    #[arg(long, default_value_t = 4, hide = true)]
    pub udp_probes: u32,
    /// iperf3's socket buffer for the UDP test (`-w`).
    #[arg(long, default_value = "4M", hide = true)]
    pub udp_buffer: String,
    /// Pings for the round-trip percentiles (10 ms apart).
    #[arg(long, default_value_t = 200, hide = true)]
    pub pings: u32,
    /// The commit the binary was built from, for the header (benches/overlay.sh sets it).
    #[arg(long, env = "VXTAP_COMMIT", hide = true)]
    pub commit: Option<String>,
}

/// One configuration: what terminates the tunnel on each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// The kernel vxlan device on both hosts: the reference.
    Kernel,
    /// vxtap on both hosts, offloads on (the default).
    Vxtap,
    /// vxtap on both hosts, `offload off`.
    VxtapOff,
    /// vxtap on host A (offloads on), the kernel device on host B: wire interop.
    VxtapKernel,
    /// vxtap on both hosts, `--underlay-filter off`.
    VxtapNofilter,
    /// vxtap on both hosts, `--busy-poll 200`: workers poll for 200 us after traffic
    /// before they sleep.
    VxtapBusypoll,
}

impl Config {
    /// Every configuration, in the order of the docs.
    pub const ALL: [Config; 6] = [
        Config::Kernel,
        Config::Vxtap,
        Config::VxtapOff,
        Config::VxtapKernel,
        Config::VxtapNofilter,
        Config::VxtapBusypoll,
    ];

    /// Its name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Config::Kernel => "kernel",
            Config::Vxtap => "vxtap",
            Config::VxtapOff => "vxtap-off",
            Config::VxtapKernel => "vxtap-kernel",
            Config::VxtapNofilter => "vxtap-nofilter",
            Config::VxtapBusypoll => "vxtap-busypoll",
        }
    }

    /// Whether host A, host B run vxtap (else the kernel device).
    pub fn vxtap_hosts(self) -> [bool; 2] {
        match self {
            Config::Kernel => [false, false],
            Config::VxtapKernel => [true, false],
            _ => [true, true],
        }
    }

    /// Whether vxtap's offloads are on.
    pub fn offload(self) -> bool {
        self != Config::VxtapOff
    }

    /// Whether vxtap's underlay filter is on.
    pub fn filter(self) -> bool {
        self != Config::VxtapNofilter
    }

    /// The daemons' `--busy-poll`, in microseconds (0: workers sleep at once).
    pub fn busy_poll_us(self) -> u32 {
        if self == Config::VxtapBusypoll {
            200
        } else {
            0
        }
    }

    /// The configuration called `name`.
    ///
    /// # Errors
    ///
    /// `UnknownConfig`, listing the known ones.
    pub fn parse(name: &str) -> Result<Config, BenchError> {
        Config::ALL
            .into_iter()
            .find(|c| c.name() == name.trim())
            .ok_or_else(|| BenchError::UnknownConfig {
                name: name.to_owned(),
                known: Config::ALL.map(Config::name).join(", "),
            })
    }
}

/// The flood test's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloodMode {
    /// All metrics, the flood test included.
    On,
    /// All metrics but the flood test.
    Off,
    /// Only TCP 1 stream with and without the flood.
    Only,
}

/// Validated settings of one benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// The configurations, in the order given.
    pub configs: Vec<Config>,
    /// Seconds of each TCP test.
    pub duration: u64,
    /// Runs.
    pub runs: u32,
    /// The flood test's mode.
    pub flood: FloodMode,
    /// Datagrams a second of the flood.
    pub flood_rate: u64,
    /// Daemon worker threads, if set.
    pub threads: Option<usize>,
    /// Seconds of each UDP probe.
    pub udp_duration: u64,
    /// UDP probes per bisection.
    pub udp_probes: u32,
    /// iperf3's UDP socket buffer.
    pub udp_buffer: String,
    /// Pings.
    pub pings: u32,
}

impl BenchArgs {
    /// Checks the flags and turns them into [`Settings`].
    ///
    /// # Errors
    ///
    /// `BadArgument` or `UnknownConfig`, saying which flag and why.
    pub fn settings(&self) -> Result<Settings, BenchError> {
        let bad = |flag: &str, why: &str| BenchError::BadArgument {
            flag: flag.to_owned(),
            why: why.to_owned(),
        };
        let mut configs = Vec::new();
        for name in &self.configs {
            let config = Config::parse(name)?;
            if configs.contains(&config) {
                return Err(bad("--configs", &format!("{name} is listed twice")));
            }
            configs.push(config);
        }
        if configs.is_empty() {
            return Err(bad("--configs", "names no configuration"));
        }
        if self.duration == 0 {
            return Err(bad("--duration", "must be at least 1 second"));
        }
        if self.runs == 0 {
            return Err(bad("--runs", "must be at least 1"));
        }
        let flood = match self.flood.as_str() {
            "on" => FloodMode::On,
            "off" => FloodMode::Off,
            "only" => FloodMode::Only,
            _ => return Err(bad("--flood", "must be on, off or only")),
        };
        if self.flood_rate == 0 {
            return Err(bad("--flood-rate", "must be at least 1 datagram a second"));
        }
        if self.threads == Some(0) {
            return Err(bad("--threads", "must be at least 1"));
        }
        if self.udp_duration == 0 {
            return Err(bad("--udp-duration", "must be at least 1 second"));
        }
        if self.udp_probes == 0 {
            return Err(bad("--udp-probes", "must be at least 1"));
        }
        if self.pings == 0 {
            return Err(bad("--pings", "must be at least 1"));
        }
        let buffer = self
            .udp_buffer
            .trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
        if buffer.is_empty() || !buffer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("--udp-buffer", "must be a size such as 4M"));
        }
        Ok(Settings {
            configs,
            duration: self.duration,
            runs: self.runs,
            flood,
            flood_rate: self.flood_rate,
            threads: self.threads,
            udp_duration: self.udp_duration,
            udp_probes: self.udp_probes,
            udp_buffer: self.udp_buffer.clone(),
            pings: self.pings,
        })
    }
}

/// The order of run `run` (from 1): run 1 in the given order, each later run starts with the
/// previous run's last configuration.
pub fn rotation(configs: &[Config], run: u32) -> Vec<Config> {
    if configs.is_empty() {
        return Vec::new();
    }
    let k = (run.saturating_sub(1) as usize) % configs.len();
    let split = configs.len() - k;
    configs[split..]
        .iter()
        .chain(&configs[..split])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(line: &str) -> Result<Settings, String> {
        let words = std::iter::once("bench").chain(line.split_whitespace());
        let cli = Cli::try_parse_from(words).map_err(|e| e.to_string())?;
        cli.bench.settings().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_overlay_sh() {
        let s = parse("").unwrap();
        assert_eq!(
            s.configs,
            [
                Config::Kernel,
                Config::Vxtap,
                Config::VxtapOff,
                Config::VxtapKernel
            ]
        );
        assert_eq!((s.duration, s.runs, s.flood), (5, 3, FloodMode::On));
        assert_eq!((s.udp_duration, s.udp_probes, s.pings), (2, 4, 200));
        assert_eq!((s.flood_rate, s.udp_buffer.as_str()), (150_000, "4M"));
    }

    #[test]
    fn flags_are_read() {
        let s = parse("--duration 1 --runs 1 --configs kernel,vxtap-nofilter --flood only --threads 2 --pings 20 --udp-probes 2 --udp-duration 1 --json").unwrap();
        assert_eq!(s.configs, [Config::Kernel, Config::VxtapNofilter]);
        assert_eq!((s.duration, s.runs, s.flood), (1, 1, FloodMode::Only));
        assert_eq!((s.threads, s.pings, s.udp_probes), (Some(2), 20, 2));
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let unknown = parse("--configs kernel,vxlan").unwrap_err();
        assert!(
            unknown.contains("unknown configuration 'vxlan'"),
            "{unknown}"
        );
        assert!(unknown.contains("vxtap-nofilter"), "{unknown}");
        for (line, flag) in [
            ("--runs 0", "--runs"),
            ("--duration 0", "--duration"),
            ("--flood sometimes", "--flood"),
            ("--configs vxtap,vxtap", "--configs"),
            ("--threads 0", "--threads"),
            ("--udp-buffer lots", "--udp-buffer"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(flag), "{line}: {e}");
        }
        // clap's own refusals: not a number, negative.
        assert!(parse("--runs -1").is_err());
        assert!(parse("--duration x").is_err());
    }

    #[test]
    fn runs_rotate_the_order() {
        let all = [Config::Kernel, Config::Vxtap, Config::VxtapOff];
        assert_eq!(rotation(&all, 1), all);
        assert_eq!(
            rotation(&all, 2),
            [Config::VxtapOff, Config::Kernel, Config::Vxtap]
        );
        assert_eq!(
            rotation(&all, 3),
            [Config::Vxtap, Config::VxtapOff, Config::Kernel]
        );
        assert_eq!(rotation(&all, 4), all);
        assert!(rotation(&[], 2).is_empty());
    }

    #[test]
    fn configs_say_what_runs_where() {
        assert_eq!(Config::VxtapKernel.vxtap_hosts(), [true, false]);
        assert!(!Config::VxtapOff.offload() && Config::VxtapOff.filter());
        assert!(!Config::VxtapNofilter.filter());
        assert_eq!(
            (
                Config::VxtapBusypoll.busy_poll_us(),
                Config::Vxtap.busy_poll_us()
            ),
            (200, 0)
        );
        for c in Config::ALL {
            assert_eq!(Config::parse(c.name()).unwrap(), c);
        }
    }
}
