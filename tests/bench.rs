//! `vxtap bench` end to end: bad arguments are clear errors (no root needed), and one short
//! real run of the kernel and vxtap configurations (root and /dev/net/tun: it fails loudly
//! without them) yields every metric for both in the JSON and a bar per configuration in
//! the SVG. No assertion depends on how fast anything is.

use std::process::Command;
use vxtap_suite::harness::{daemon::binary, missing_programs, require_root};

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("bench")
        .args(args)
        .output()
        .expect("running vxtap bench")
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, expected) in [
        (&["--runs", "0"][..], "--runs must be at least 1"),
        (
            &["--duration", "0"][..],
            "--duration must be at least 1 second",
        ),
        (
            &["--configs", "kernel,vxlan"][..],
            "unknown configuration 'vxlan'",
        ),
        (&["--flood", "maybe"][..], "--flood must be on, off or only"),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_short_run_measures_every_metric_of_both_configs() {
    require_root();
    let missing = missing_programs(&[("iperf3", "iperf3"), ("ping", "iputils-ping")]);
    assert!(missing.is_empty(), "vxtap bench needs {missing:?}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let svg_path = dir.path().join("bench.svg");
    let svg_arg = svg_path.to_string_lossy().into_owned();
    let out = bench(&[
        "--duration",
        "1",
        "--runs",
        "1",
        "--configs",
        "kernel,vxtap",
        "--pings",
        "20",
        "--udp-probes",
        "3",
        "--udp-duration",
        "1",
        "--json",
        "--svg",
        &svg_arg,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vxtap bench failed:\n{stderr}");
    // Progress names the configuration, the run and the metric.
    assert!(stderr.contains("run 1/1 vxtap: TCP 4 streams"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    let metrics = json["metrics"].as_array().expect("a metrics array");
    let find = |key: &str| {
        metrics
            .iter()
            .find(|m| m["metric"] == key)
            .unwrap_or_else(|| panic!("no metric {key} in {json:#}"))
    };
    for key in [
        "tcp1",
        "tcp4",
        "udp",
        "p50",
        "p99",
        "tcp1_flood",
        "flood_pps",
        "kept",
        "cpu_machine",
        "cpu_daemon",
    ] {
        let metric = find(key);
        let configs: &[&str] = if key == "cpu_daemon" {
            // The kernel has no daemon.
            &["vxtap"]
        } else {
            &["kernel", "vxtap"]
        };
        for config in configs {
            let entry = &metric["configs"][config];
            let runs = entry["runs"]
                .as_array()
                .unwrap_or_else(|| panic!("{key} {config}: {entry}"));
            assert_eq!(runs.len(), 1, "{key} {config}: {entry}");
            let value = runs[0].as_f64().unwrap_or(f64::NAN);
            assert!(value.is_finite() && value >= 0.0, "{key} {config}: {entry}");
            // The UDP figure is the best rate a probe carried under 1% loss: on a loaded
            // machine no probe may get there, which is a measurement, not a failure.
            if key != "udp" {
                assert!(value > 0.0, "{key} {config}: {entry}");
            }
            assert_eq!(entry["median"], runs[0], "{key} {config}");
        }
        if key != "cpu_daemon" && key != "udp" {
            let ratio = metric["configs"]["vxtap"]["ratio_to_kernel"].as_f64();
            assert!(ratio.is_some_and(|r| r > 0.0), "{key}: {metric}");
        }
    }
    assert_eq!(
        json["settings"]["configs"],
        serde_json::json!(["kernel", "vxtap"])
    );
    assert!(json["header"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert!(!json["header"]["halt_poll"]
        .as_array()
        .expect("halt poll facts")
        .is_empty());
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG file");
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    for config in ["kernel", "vxtap"] {
        assert!(
            svg.contains(&format!(r#"class="bar" data-config="{config}""#)),
            "no bar for {config}: {svg}"
        );
    }
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
}
