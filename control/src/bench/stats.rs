//! The arithmetic of the benchmark, pure and tested without a network: medians and spreads
//! of runs, nearest-rank percentiles of ping times, and the bounded bisection that finds the
//! highest UDP rate with less than 1% loss, driven by whatever probe it is given.

/// Median of `values` (mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Smallest and largest of `values`; `None` if empty.
pub fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let mut iter = values.iter().copied().filter(|v| !v.is_nan());
    let first = iter.next()?;
    Some(iter.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// The nearest-rank `p`th percentile of `sorted` (ascending); `None` if empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Round-trip times (ms) out of `ping`'s output, ascending.
pub fn ping_times(output: &str) -> Vec<f64> {
    let mut times: Vec<f64> = output
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("time="))
        .filter_map(|t| t.parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// What one UDP probe measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Received rate, Gbit/s.
    pub received_gbps: f64,
    /// Datagrams lost, %.
    pub lost_percent: f64,
    /// Rate the sender reached, bit/s.
    pub sent_bps: u64,
}

/// Loss below which a probe passes, %.
pub const MAX_LOSS_PERCENT: f64 = 1.0;

/// The bisection of the UDP test. The first probe is unlimited: if it loses under 1%, the
/// sender is the limit and its received rate is the answer. Otherwise it received R: the
/// search bisects between the best passing rate (0 at first) and a ceiling of
/// min(offered, 1.25 R), starting at 0.9 R. The answer is the best received rate of a
/// passing probe, so it is never more than a probe actually carried.
#[derive(Debug, Clone)]
pub struct UdpSearch {
    probes: u32,
    done: u32,
    finished: bool,
    rate: u64,
    low: u64,
    high: u64,
    best: f64,
}

impl UdpSearch {
    /// A search of at most `probes` probes.
    pub fn new(probes: u32) -> UdpSearch {
        UdpSearch {
            probes,
            done: 0,
            finished: probes == 0,
            rate: 0,
            low: 0,
            high: 0,
            best: 0.0,
        }
    }

    /// The rate (bit/s, 0 = unlimited) of the next probe, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        (!self.finished).then_some(self.rate)
    }

    /// Records what the probe at [`next_rate`](Self::next_rate) measured.
    pub fn record(&mut self, probe: Probe) {
        if self.finished {
            return;
        }
        self.done += 1;
        let rate = self.rate;
        let received_bps = (probe.received_gbps * 1e9).max(0.0) as u64;
        if probe.lost_percent < MAX_LOSS_PERCENT {
            self.best = self.best.max(probe.received_gbps);
            if rate == 0 {
                // Unlimited and lossless: the sender is the limit.
                self.finished = true;
                return;
            }
            self.low = rate;
        } else if rate == 0 {
            self.high = probe.sent_bps.min(received_bps.saturating_mul(5) / 4);
        } else {
            self.high = rate;
        }
        self.rate = if self.done == 1 {
            (received_bps / 10 * 9).max(1_000_000)
        } else {
            (self.low + self.high) / 2
        };
        if self.done >= self.probes {
            self.finished = true;
        }
    }

    /// The best received rate under 1% loss so far, Gbit/s (0 if none passed).
    pub fn best(&self) -> f64 {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(spread(&[7.5]), Some((7.5, 7.5)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let t: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&t, 50.0), Some(100.0));
        assert_eq!(percentile(&t, 99.0), Some(198.0));
        assert_eq!(percentile(&[0.3], 99.0), Some(0.3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ping_output_is_parsed() {
        let out = "PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.291 ms\n\
                   64 bytes from 10.0.0.3: icmp_seq=2 ttl=64 time=0.088 ms\n\
                   rtt min/avg/max/mdev = 0.088/0.189/0.291/0.101 ms\n";
        assert_eq!(ping_times(out), [0.088, 0.291]);
    }

    /// A fake data path that carries up to `capacity` Gbit/s losslessly and drops the rest;
    /// unlimited probes are sent at `sender` Gbit/s.
    fn run(capacity: f64, sender: f64, probes: u32) -> (f64, Vec<u64>) {
        let mut search = UdpSearch::new(probes);
        let mut rates = Vec::new();
        while let Some(rate) = search.next_rate() {
            rates.push(rate);
            let offered = if rate == 0 { sender } else { rate as f64 / 1e9 };
            let received = offered.min(capacity);
            search.record(Probe {
                received_gbps: received,
                lost_percent: 100.0 * (offered - received) / offered,
                sent_bps: (offered * 1e9) as u64,
            });
        }
        (search.best(), rates)
    }

    #[test]
    fn a_lossless_unlimited_probe_ends_the_search() {
        let (best, rates) = run(5.0, 1.2, 4);
        assert_eq!(rates, [0]);
        assert!((best - 1.2).abs() < 1e-9);
    }

    #[test]
    fn an_overloaded_path_is_bisected_within_the_probe_budget() {
        let (best, rates) = run(1.0, 3.0, 4);
        assert_eq!(rates.len(), 4);
        // 0.9 R first, then bisection between the best pass and min(sent, 1.25 R).
        assert_eq!(rates[0], 0);
        assert_eq!(rates[1], 900_000_000);
        assert_eq!(rates[2], (900_000_000 + 1_250_000_000) / 2);
        assert!((0.9..=1.0).contains(&best), "{best}");
        // Never more than a probe carried.
        let (best, _) = run(1.0, 3.0, 8);
        assert!(best <= 1.0 && best > 0.99, "{best}");
    }

    #[test]
    fn nothing_passing_records_zero() {
        let mut search = UdpSearch::new(2);
        while search.next_rate().is_some() {
            search.record(Probe {
                received_gbps: 0.5,
                lost_percent: 50.0,
                sent_bps: 1_000_000_000,
            });
        }
        assert_eq!(search.best(), 0.0);
        assert!(UdpSearch::new(0).next_rate().is_none());
    }
}
