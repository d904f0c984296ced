//! The benchmark's chart: a self-contained SVG of each configuration's median over the
//! kernel's, one group of bars per metric, each bar labelled with its ratio, a dashed line at
//! 1.0 (the kernel), and a legend. Hand-written SVG text, pure.

use super::args::Config;
use super::report::Report;
use std::fmt::Write as _;

/// One per configuration, in the order of `Config::ALL` (its length ties them at compile time).
const COLOURS: [&str; Config::ALL.len()] = [
    "#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
];
const BAR: f64 = 26.0;
const GAP: f64 = 30.0;
const TOP: f64 = 60.0;
const PLOT: f64 = 260.0;
const LEFT: f64 = 50.0;

/// One group of bars: the metric's label, whether lower is better, each configuration's
/// ratio.
struct Group {
    label: &'static str,
    lower_is_better: bool,
    bars: Vec<(Config, f64)>,
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart of `report`'s ratios to the kernel. Metrics without a kernel value (the daemons'
/// CPU) have no ratio and are left out; without a kernel column the chart says so.
pub fn chart(report: &Report) -> String {
    let configs = &report.settings.configs;
    let results = &report.results;
    let groups: Vec<Group> = results
        .metrics(configs)
        .into_iter()
        .filter_map(|m| {
            let bars: Vec<(Config, f64)> = configs
                .iter()
                .filter_map(|&c| results.ratio(m.key, c).map(|r| (c, r)))
                .collect();
            (!bars.is_empty()).then_some(Group {
                label: m.label,
                lower_is_better: m.lower_is_better,
                bars,
            })
        })
        .collect();
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|&(_, r)| r))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let group_width = BAR * configs.len() as f64 + GAP;
    // Room on the right for the last group's slanted label.
    let width = (LEFT + group_width * groups.len().max(1) as f64 + 200.0).max(420.0);
    let height = TOP + PLOT + 120.0;
    let y = |ratio: f64| TOP + PLOT - PLOT * ratio / top;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="14" font-weight="bold">vxtap bench: median / kernel median ({} run(s), {}, kernel {})</text>"#,
        report.settings.runs,
        escape(&report.header.date),
        escape(&report.header.kernel)
    );
    if groups.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}">no ratios: the kernel configuration did not run</text>"#,
            TOP + 20.0
        );
    }
    // Axis, and the kernel's 1.0 line.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#000"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
        TOP + PLOT,
        TOP + PLOT,
        width - 10.0,
        TOP + PLOT
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#444" stroke-dasharray="4 3"/><text x="{2}" y="{3:.1}" text-anchor="end">1.0</text>"##,
        y(1.0),
        width - 10.0,
        LEFT - 4.0,
        y(1.0) + 4.0
    );
    for (g, group) in groups.iter().enumerate() {
        let bars = &group.bars;
        let x0 = LEFT + GAP / 2.0 + group_width * g as f64;
        for (b, &(config, ratio)) in bars.iter().enumerate() {
            let x = x0 + BAR * b as f64;
            let colour = COLOURS[Config::ALL.iter().position(|&c| c == config).unwrap_or(0)];
            let _ = writeln!(
                svg,
                r#"<rect class="bar" data-config="{}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {ratio:.2}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{ratio:.2}</text>"#,
                config.name(),
                y(ratio),
                BAR - 2.0,
                (TOP + PLOT - y(ratio)).max(0.0),
                config.name(),
                x + (BAR - 2.0) / 2.0,
                y(ratio) - 3.0
            );
        }
        let suffix = if group.lower_is_better {
            " (lower is better)"
        } else {
            ""
        };
        let cx = x0 + BAR * bars.len() as f64 / 2.0;
        let _ = writeln!(
            svg,
            r#"<text transform="translate({cx:.1},{:.1}) rotate(30)" font-size="10">{}{suffix}</text>"#,
            TOP + PLOT + 14.0,
            escape(group.label)
        );
    }
    for (i, config) in configs.iter().enumerate() {
        let colour = COLOURS[Config::ALL.iter().position(|c| c == config).unwrap_or(0)];
        let x = LEFT + 110.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="36" width="10" height="10" fill="{colour}"/><text x="{}" y="45">{}</text>"#,
            x + 14.0,
            config.name()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample;

    #[test]
    fn the_chart_has_a_bar_per_config_and_metric() {
        let svg = chart(&sample());
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        // tcp1, tcp4, udp, p50, p99, cpu_machine have a kernel value; cpu_daemon does not.
        assert_eq!(svg.matches(r#"data-config="kernel""#).count(), 6);
        assert_eq!(svg.matches(r#"data-config="vxtap""#).count(), 6);
        assert!(svg.contains(">0.55<"), "{svg}");
        assert!(svg.contains("ping RTT p50, ms (lower is better)"));
        // Balanced tags, roughly: every opened rect and text is closed.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn every_configuration_has_a_colour() {
        let mut report = sample();
        report.settings.configs = Config::ALL.to_vec();
        for config in Config::ALL {
            report.results.record("tcp1", config, 5.0);
        }
        let svg = chart(&report);
        for config in Config::ALL {
            let bar = format!(r#"data-config="{}""#, config.name());
            assert!(svg.contains(&bar), "no bar for {}", config.name());
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
