//! What the CNI plugin asks of the agent. A CNI attachment (the runtime's container id and
//! interface name) is a `connect` with the interface name and MTU the runtime gives; the
//! attachment's endpoint is remembered in `RUN_DIR/cni.json` (root's alone), since DEL, CHECK
//! and GC name attachments, not namespaces, and DEL may come after the namespace is gone.

use super::{lock, Agent, AgentError, Container, Interface};
use crate::api::{CniAdded, CniAttachment};
use crate::cluster::Endpoint;
use crate::plumbing;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The attachments this host made, by attachment: the endpoint's store key.
type Attachments = BTreeMap<String, String>;

fn attachment_key(a: &CniAttachment) -> String {
    format!("{}/{}", a.container, a.ifname)
}

impl Agent {
    fn cni_path(&self) -> PathBuf {
        self.config.run_dir.join("cni.json")
    }

    fn cni_attachments(&self) -> Result<Attachments, AgentError> {
        let path = self.cni_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AgentError::Dataplane(format!("{} is not a CNI record: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Attachments::new()),
            Err(e) => Err(AgentError::Dataplane(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    }

    fn save_cni(&self, attachments: &Attachments) -> Result<(), AgentError> {
        let json = serde_json::to_vec_pretty(attachments)
            .map_err(|e| AgentError::Dataplane(format!("encoding the CNI record: {e}")))?;
        Ok(plumbing::write_atomically(&self.cni_path(), &json, 0o600)?)
    }

    /// CNI ADD: connects `netns` to `network` as `attachment.ifname`, and remembers it.
    /// Nothing is left if anything fails.
    ///
    /// # Errors
    ///
    /// What `connect` refuses; an attachment that exists already.
    pub(super) fn cni_add(
        &self,
        attachment: &CniAttachment,
        network: &str,
        netns: &str,
        ip: Option<Ipv4Addr>,
        name: &str,
        mtu: Option<u32>,
    ) -> Result<CniAdded, AgentError> {
        let _cni = lock(&self.cni);
        let mut attachments = self.cni_attachments()?;
        let key = attachment_key(attachment);
        if attachments.contains_key(&key) {
            return Err(AgentError::Dataplane(format!(
                "container {} already has {} on vxtap (CNI ADD twice)",
                crate::cluster::validate::escape(&attachment.container),
                attachment.ifname
            )));
        }
        let interface = Interface {
            name: Some(attachment.ifname.clone()),
            mtu,
        };
        let endpoint = self.connect(network, netns, ip, Some(name), &interface)?;
        attachments.insert(key, endpoint.key());
        if let Err(e) = self.save_cni(&attachments) {
            if let Err(undo) = self.disconnect(&endpoint.network, netns) {
                tracing::error!(error = %undo, "rolling back a CNI ADD");
            }
            return Err(e);
        }
        let network = self.snapshot()?.require_network(&endpoint.network)?.clone();
        let host_netns = self.overlay_dir().join(super::overlay_name(&network.id));
        let resolver = self
            .config
            .resolver
            .as_ref()
            .map(|_| *crate::dns::RESOLVER_ADDR.ip());
        if let Some(resolver) = resolver {
            // The container reaches the resolver through the gateway, whatever its default
            // route; a second vxtap network finds the route there already.
            let route = format!("{resolver}/32");
            let gateway = network.gateway.to_string();
            let added = plumbing::ip(
                Path::new(netns),
                &[
                    "route",
                    "replace",
                    &route,
                    "via",
                    &gateway,
                    "dev",
                    &attachment.ifname,
                ],
            );
            if let Err(e) = added {
                tracing::warn!(error = %e, "routing the container to the resolver");
            }
        }
        Ok(CniAdded {
            host_ifname: format!("ve{}", super::tag_of(&endpoint)),
            host_netns: host_netns.display().to_string(),
            prefix: network.subnet.prefix_len(),
            gateway: network.gateway,
            resolver,
            endpoint,
        })
    }

    /// CNI DEL: removes the attachment's endpoint (its interface too, if the namespace is
    /// still there). An attachment this host does not have is fine.
    ///
    /// # Errors
    ///
    /// The store refused; the attachment stays.
    pub(super) fn cni_del(&self, attachment: &CniAttachment) -> Result<(), AgentError> {
        let _cni = lock(&self.cni);
        let mut attachments = self.cni_attachments()?;
        let key = attachment_key(attachment);
        let Some(endpoint_key) = attachments.get(&key).cloned() else {
            return Ok(());
        };
        if let Some(endpoint) = self.local_endpoint_by_key(&endpoint_key) {
            self.cni_remove(&endpoint)?;
        }
        attachments.remove(&key);
        self.save_cni(&attachments)
    }

    fn cni_remove(&self, endpoint: &Endpoint) -> Result<(), AgentError> {
        let store = self.store()?;
        let mut state = lock(&self.state);
        let snapshot = self.planning_snapshot(store.as_ref(), &state, &endpoint.network)?;
        let path =
            super::netns_path(&endpoint.netns).unwrap_or_else(|_| PathBuf::from(&endpoint.netns));
        self.remove_endpoint(store.as_ref(), &mut state, &snapshot, endpoint, &path)?;
        tracing::info!(name = %endpoint.name, ip = %endpoint.ip, "CNI attachment removed");
        Ok(())
    }

    /// CNI CHECK: the attachment's endpoint is in the store, its interface in `netns` has its
    /// MAC, is up and holds `address`, and the container has `routes` through it.
    ///
    /// # Errors
    ///
    /// What does not match, in one line.
    pub(super) fn cni_check(
        &self,
        attachment: &CniAttachment,
        netns: &str,
        address: &str,
        routes: &[(String, Option<Ipv4Addr>)],
    ) -> Result<(), AgentError> {
        let fail = |what: String| Err(AgentError::Dataplane(what));
        let attachments = self.cni_attachments()?;
        let Some(key) = attachments.get(&attachment_key(attachment)) else {
            return fail(format!(
                "vxtap has no attachment {} of container {}",
                attachment.ifname,
                crate::cluster::validate::escape(&attachment.container)
            ));
        };
        let Some(endpoint) = self.local_endpoint_by_key(key) else {
            return fail("the attachment's endpoint is gone from this host".to_owned());
        };
        let snapshot = self.snapshot()?;
        if !snapshot
            .endpoints
            .contains_key(&(endpoint.network.clone(), endpoint.id.clone()))
        {
            return fail(format!(
                "endpoint {} is not in the store (or was refused there)",
                endpoint.name
            ));
        }
        let container = Container::lookup(super::netns_path(netns)?);
        let recorded = Container::lookup(
            super::netns_path(&endpoint.netns).unwrap_or_else(|_| PathBuf::from(&endpoint.netns)),
        );
        if container.id.is_none() || !container.is(&recorded) {
            return fail(format!(
                "{netns} is not the namespace the attachment was made in"
            ));
        }
        let json = plumbing::ip(
            &container.path,
            &["-j", "addr", "show", "dev", &attachment.ifname],
        )
        .map_err(|_| {
            AgentError::Dataplane(format!("{} is gone from the container", attachment.ifname))
        })?;
        let links: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| AgentError::Dataplane(format!("ip -j addr: {e}")))?;
        let link = &links[0];
        if link["address"].as_str() != Some(endpoint.mac.as_str()) {
            return fail(format!(
                "{} has MAC {}, not {}",
                attachment.ifname, link["address"], endpoint.mac
            ));
        }
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        if !up {
            return fail(format!("{} is down", attachment.ifname));
        }
        let has_address = link["addr_info"].as_array().is_some_and(|addrs| {
            addrs.iter().any(|a| {
                format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                ) == address
            })
        });
        if !has_address || !address.starts_with(&format!("{}/", endpoint.ip)) {
            return fail(format!(
                "{} does not hold {address} (vxtap gave {})",
                attachment.ifname, endpoint.ip
            ));
        }
        if routes.is_empty() {
            return Ok(());
        }
        let json = plumbing::ip(
            &container.path,
            &["-j", "route", "show", "dev", &attachment.ifname],
        )?;
        let table: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| AgentError::Dataplane(format!("ip -j route: {e}")))?;
        for (dst, gateway) in routes {
            // `ip` writes a host route without its /32.
            let short = dst.strip_suffix("/32").unwrap_or(dst);
            let found = table.as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    let to = r["dst"].as_str().unwrap_or_default();
                    (to == dst || to == short || (dst == "0.0.0.0/0" && to == "default"))
                        && gateway.is_none_or(|g| r["gateway"].as_str() == Some(&g.to_string()))
                })
            });
            if !found {
                return fail(format!(
                    "the container has no route to {dst} through {}",
                    attachment.ifname
                ));
            }
        }
        Ok(())
    }

    /// CNI GC: removes this host's attachments that are not in `valid`.
    ///
    /// # Errors
    ///
    /// The first removal the store refused (the others are still tried).
    pub(super) fn cni_gc(&self, valid: &[CniAttachment]) -> Result<(), AgentError> {
        let valid: std::collections::BTreeSet<String> = valid.iter().map(attachment_key).collect();
        let _cni = lock(&self.cni);
        let mut attachments = self.cni_attachments()?;
        let stale: Vec<(String, String)> = attachments
            .iter()
            .filter(|(a, _)| !valid.contains(*a))
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect();
        let mut first_error = None;
        for (attachment, key) in stale {
            let removed = match self.local_endpoint_by_key(&key) {
                Some(endpoint) => self.cni_remove(&endpoint),
                None => Ok(()),
            };
            match removed {
                Ok(()) => {
                    tracing::info!(attachment = %crate::cluster::validate::escape(&attachment), "CNI GC removed a stale attachment");
                    attachments.remove(&attachment);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.save_cni(&attachments)?;
        first_error.map_or(Ok(()), Err)
    }
}
