//! The local Docker engine's API, as far as vxtap needs it: list, create and remove vxtap
//! networks, and learn which container holds an endpoint and by which names. Unversioned
//! paths, which every engine from 20.10 to 28 serves at its own API version.
//!
//! Never called while the agent or the driver holds a lock: the engine calls back into the
//! plugin while it serves a request.

use crate::cluster::Network;
use crate::http::{query_escape, Reply, UnixClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one engine call may take (creating a network calls back into vxtap).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached.
    #[error("Docker engine {url}: {reason}")]
    Unreachable {
        /// `--docker-host`.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The engine answered with an error.
    #[error("Docker engine: {what}: {message} (HTTP {status})")]
    Refused {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("Docker engine: {what}: unexpected answer: {reason}")]
    Malformed {
        /// The call.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

/// A vxtap network as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNetwork {
    /// Docker's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its driver options (`vxtap.network` when vxtap created it).
    pub options: BTreeMap<String, String>,
}

/// A container attached to a network, as the engine's network inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The container's id.
    pub container: String,
    /// Docker's endpoint id.
    pub endpoint: String,
}

/// The local engine.
#[derive(Debug)]
pub struct Engine {
    client: UnixClient,
    url: String,
}

impl Engine {
    /// The engine at `url` (`unix:///var/run/docker.sock` or a socket path).
    ///
    /// # Errors
    ///
    /// A URL of another kind.
    pub fn new(url: &str) -> Result<Engine, EngineError> {
        let client = UnixClient::from_url(url, TIMEOUT).map_err(|e| EngineError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Engine {
            client,
            url: url.to_owned(),
        })
    }

    fn checked(
        &self,
        what: &str,
        reply: Result<Reply, impl std::fmt::Display>,
    ) -> Result<Reply, EngineError> {
        let reply = reply.map_err(|e| EngineError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        Err(EngineError::Refused {
            what: what.to_owned(),
            status: reply.status,
            message: message_of(&reply.body),
        })
    }

    fn json(&self, what: &str, reply: &Reply) -> Result<Value, EngineError> {
        serde_json::from_slice(&reply.body).map_err(|e| EngineError::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The engine's networks with driver vxtap.
    ///
    /// # Errors
    ///
    /// The engine is unreachable or answers otherwise than documented.
    pub fn vxtap_networks(&self) -> Result<Vec<EngineNetwork>, EngineError> {
        let what = "listing networks";
        let filter = query_escape(r#"{"driver":{"vxtap":true}}"#);
        let reply = self.checked(
            what,
            self.client.get(&format!("/networks?filters={filter}")),
        )?;
        parse_networks(&self.json(what, &reply)?).map_err(|reason| EngineError::Malformed {
            what: what.to_owned(),
            reason,
        })
    }

    /// The name of network `id` and the containers attached to it; `None` if the engine has
    /// no such network (yet).
    ///
    /// # Errors
    ///
    /// The engine is unreachable or answers otherwise than documented.
    pub fn network(&self, id: &str) -> Result<Option<(String, Vec<Attached>)>, EngineError> {
        let what = "inspecting a network";
        let reply = self.client.get(&format!("/networks/{}", query_escape(id)));
        if matches!(&reply, Ok(r) if r.status == 404) {
            return Ok(None);
        }
        let reply = self.checked(what, reply)?;
        parse_network(&self.json(what, &reply)?)
            .map(Some)
            .map_err(|reason| EngineError::Malformed {
                what: what.to_owned(),
                reason,
            })
    }

    /// Creates `network` in this engine, attached to the vxtap network (driver and IPAM
    /// option `vxtap.network`). Returns Docker's id.
    ///
    /// # Errors
    ///
    /// The engine refused (the name is taken by another network, say) or is unreachable.
    pub fn create_network(&self, network: &Network) -> Result<String, EngineError> {
        let what = format!("creating network {}", network.name);
        let options = json!({ super::protocol::OPT_NETWORK: network.id });
        let body = json!({
            "Name": network.name,
            "CheckDuplicate": true,
            "Driver": super::protocol::DRIVER,
            "Options": options,
            "IPAM": {
                "Driver": super::protocol::DRIVER,
                "Config": [{ "Subnet": network.subnet.to_string(), "Gateway": network.gateway.to_string() }],
                "Options": options,
            },
        });
        let reply = self.checked(
            &what,
            self.client
                .post_json("/networks/create", body.to_string().as_bytes()),
        )?;
        let value = self.json(&what, &reply)?;
        value["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| EngineError::Malformed {
                what,
                reason: "no Id".to_owned(),
            })
    }

    /// Removes network `id` from this engine; one already gone is fine.
    ///
    /// # Errors
    ///
    /// The engine refused (containers still use it) or is unreachable.
    pub fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        let reply = self
            .client
            .delete(&format!("/networks/{}", query_escape(id)));
        if matches!(&reply, Ok(r) if r.status == 404) {
            return Ok(());
        }
        self.checked("removing a network", reply).map(|_| ())
    }

    /// The names of the container `container` on the network it reaches through Docker
    /// endpoint `endpoint`: its name first, then its aliases there. `None` if the engine
    /// has no such container or it is not on that endpoint.
    ///
    /// # Errors
    ///
    /// The engine is unreachable or answers otherwise than documented.
    pub fn container_names(
        &self,
        container: &str,
        endpoint: &str,
    ) -> Result<Option<Vec<String>>, EngineError> {
        let what = "inspecting a container";
        let reply = self
            .client
            .get(&format!("/containers/{}/json", query_escape(container)));
        if matches!(&reply, Ok(r) if r.status == 404) {
            return Ok(None);
        }
        let reply = self.checked(what, reply)?;
        Ok(container_names(&self.json(what, &reply)?, endpoint))
    }
}

/// The `message` of an engine error body, or the body itself.
fn message_of(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    crate::cluster::validate::escape(&text)
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        .collect()
}

fn parse_networks(value: &Value) -> Result<Vec<EngineNetwork>, String> {
    value
        .as_array()
        .ok_or("not a list")?
        .iter()
        .map(|n| {
            Ok(EngineNetwork {
                id: n["Id"].as_str().ok_or("a network without Id")?.to_owned(),
                name: n["Name"]
                    .as_str()
                    .ok_or("a network without Name")?
                    .to_owned(),
                options: string_map(&n["Options"]),
            })
        })
        .collect()
}

fn parse_network(value: &Value) -> Result<(String, Vec<Attached>), String> {
    let name = value["Name"].as_str().ok_or("no Name")?.to_owned();
    let attached = value["Containers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(container, c)| {
            Some(Attached {
                container: container.clone(),
                endpoint: c["EndpointID"].as_str()?.to_owned(),
            })
        })
        .collect();
    Ok((name, attached))
}

fn container_names(value: &Value, endpoint: &str) -> Option<Vec<String>> {
    let name = value["Name"].as_str()?.trim_start_matches('/').to_owned();
    let network = value["NetworkSettings"]["Networks"]
        .as_object()?
        .values()
        .find(|n| n["EndpointID"].as_str() == Some(endpoint))?;
    let mut names = vec![name];
    names.extend(
        network["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned)),
    );
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_engine_answers() {
        // Trimmed from dockerd 20.10's answers.
        let list: Value = serde_json::from_str(
            r#"[{"Name":"ov_net1","Id":"4a3b","Driver":"vxtap","Options":{"vxtap.network":"99"}},
                {"Name":"n2","Id":"5c","Driver":"vxtap","Options":{}}]"#,
        )
        .unwrap();
        let networks = parse_networks(&list).unwrap();
        assert_eq!(networks[0].options["vxtap.network"], "99");
        assert_eq!(networks[1].name, "n2");
        assert!(parse_networks(&serde_json::json!({"x": 1})).is_err());

        let inspect: Value = serde_json::from_str(
            r#"{"Name":"ov_net1","Id":"4a3b","Containers":{"c0ffee":{"Name":"bbox1","EndpointID":"e1","MacAddress":"02:42:0a:00:00:02","IPv4Address":"10.0.0.2/24"}}}"#,
        )
        .unwrap();
        let (name, attached) = parse_network(&inspect).unwrap();
        assert_eq!(name, "ov_net1");
        assert_eq!(
            attached,
            [Attached {
                container: "c0ffee".into(),
                endpoint: "e1".into()
            }]
        );

        let container: Value = serde_json::from_str(
            r#"{"Name":"/bbox1","NetworkSettings":{"Networks":{
                "ov_net1":{"Aliases":["web","c0ffee12"],"EndpointID":"e1"},
                "other":{"Aliases":null,"EndpointID":"e2"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            container_names(&container, "e1").unwrap(),
            ["bbox1", "web", "c0ffee12"]
        );
        assert_eq!(container_names(&container, "e2").unwrap(), ["bbox1"]);
        assert_eq!(container_names(&container, "e3"), None);
        assert_eq!(
            message_of(br#"{"message":"network x not found"}"#),
            "network x not found"
        );
        assert_eq!(message_of(b"plain\n"), "plain");
    }
}
