//! Reading `vxtap network inspect NAME`: the JSON the CLI prints is the stable contract, so
//! the demo takes endpoint addresses from it rather than from human-readable output.
//!
//! Only the fields the demo uses are required; anything else the daemon adds is ignored.
//! This module is pure: text in, values out.

use serde::Deserialize;
use std::net::Ipv4Addr;

/// The parts of a network the demo shows and uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct NetworkView {
    /// The network's name.
    pub(crate) name: String,
    /// Its VXLAN network identifier.
    pub(crate) vni: u32,
    /// Its subnet, `10.x.y.0/24`.
    pub(crate) subnet: String,
    /// Its MTU, if reported.
    #[serde(default)]
    pub(crate) mtu: Option<u32>,
    /// Every endpoint on every host.
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointView>,
}

/// One endpoint (a container's interface) of a network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct EndpointView {
    /// The name given with `connect --name`.
    pub(crate) name: String,
    /// The address, with or without a `/prefix`.
    pub(crate) ip: String,
    /// The MAC address.
    pub(crate) mac: String,
    /// The host the endpoint lives on.
    #[serde(default)]
    pub(crate) host: Option<String>,
}

impl NetworkView {
    /// Parses the output of `vxtap network inspect`.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the JSON.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text.trim()).map_err(|e| e.to_string())
    }

    /// The endpoint called `name`, if any.
    pub(crate) fn endpoint(&self, name: &str) -> Option<&EndpointView> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

impl EndpointView {
    /// The endpoint's IPv4 address without its prefix length.
    ///
    /// # Errors
    ///
    /// A description of the unparsable value.
    pub(crate) fn ipv4(&self) -> Result<Ipv4Addr, String> {
        let bare = self.ip.split('/').next().unwrap_or_default();
        bare.parse().map_err(|_| {
            format!(
                "endpoint {} has IP {:?}, not an IPv4 address",
                self.name, self.ip
            )
        })
    }
}

/// `text` cut to at most `max` characters (for error messages quoting output).
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `text` re-indented if it is JSON, unchanged otherwise.
pub(crate) fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .map_or_else(|_| text.to_owned(), |value| format!("{value:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"{
      "name": "demo", "id": "3f2a9c", "vni": 4096, "subnet": "10.0.0.0/24",
      "gateway": "10.0.0.1", "mtu": 1450, "created": "whenever",
      "endpoints": [
        {"name": "client", "id": "e1", "ip": "10.0.0.2/24", "mac": "02:42:0a:00:00:02",
         "host": "h1", "vtep": "198.18.0.1", "netns": "/run/netns/x"},
        {"name": "server", "id": "e2", "ip": "10.0.0.3", "mac": "02:42:0a:00:00:03",
         "host": "h2", "vtep": "198.18.0.2"}
      ]
    }"#;

    #[test]
    fn parses_inspect_and_finds_endpoints() {
        let network = NetworkView::parse(INSPECT).unwrap();
        assert_eq!(network.name, "demo");
        assert_eq!(network.vni, 4096);
        assert_eq!(network.mtu, Some(1450));
        let client = network.endpoint("client").unwrap();
        assert_eq!(client.ipv4().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(client.host.as_deref(), Some("h1"));
        let server = network.endpoint("server").unwrap();
        assert_eq!(server.ipv4().unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(server.mac, "02:42:0a:00:00:03");
        assert!(network.endpoint("nobody").is_none());
    }

    #[test]
    fn tolerates_missing_optional_fields_and_refuses_broken_input() {
        let bare = r#"{"name":"n","id":"i","vni":7,"subnet":"10.1.2.0/24"}"#;
        let network = NetworkView::parse(bare).unwrap();
        assert!(network.endpoints.is_empty());
        assert_eq!(network.mtu, None);
        assert!(NetworkView::parse("network demo: 10.0.0.0/24").is_err());
        assert!(NetworkView::parse(r#"{"name":"n"}"#).is_err());
        let odd = EndpointView {
            name: "x".into(),
            ip: "fe80::1".into(),
            mac: String::new(),
            host: None,
        };
        assert!(odd.ipv4().unwrap_err().contains("fe80::1"));
    }

    #[test]
    fn pretty_prints_json_only() {
        assert_eq!(pretty(r#"{"a":[1]}"#), "{\n  \"a\": [\n    1\n  ]\n}");
        assert_eq!(pretty("not json\n"), "not json\n");
    }

    #[test]
    fn shortens_long_text() {
        assert_eq!(shorten("  short \n", 10), "short");
        assert_eq!(shorten("abcdefghij", 4), "abcd...");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }
}
