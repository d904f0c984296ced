//! What the Docker driver must remember across a restart of the daemon, in
//! `RUN_DIR/docker.json` (root's alone): Docker never repeats a `CreateNetwork` or a
//! `CreateEndpoint` to a plugin that came back, so the ids Docker uses must map to vxtap's
//! without asking it.

use crate::cluster::ipam::Subnet;
use crate::cluster::NetworkRequest;
use crate::plumbing::{self, PlumbingError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a pool asked for by `RequestPool` stays reserved without a `CreateNetwork`.
pub const POOL_RESERVATION: Duration = Duration::from_secs(120);

/// The saved part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Docker's network id on this engine -> vxtap's network id.
    pub networks: BTreeMap<String, String>,
    /// Networks `docker network create` made here whose store record waits for the name
    /// Docker gives them (Docker never tells a driver the name; vxtap asks the engine once
    /// the network is committed): Docker's id (which becomes vxtap's) -> what to create.
    pub unnamed: BTreeMap<String, NetworkRequest>,
    /// Docker's endpoint id -> the store key of vxtap's endpoint.
    pub endpoints: BTreeMap<String, String>,
}

/// The driver's memory: the saved part and the pools being created.
#[derive(Debug)]
pub struct DriverState {
    path: PathBuf,
    /// What is saved.
    pub saved: Saved,
    /// Subnets handed out by `RequestPool` and not yet part of a network, with the gateway
    /// asked for.
    pub pools: BTreeMap<Subnet, (Instant, Option<std::net::Ipv4Addr>)>,
}

impl DriverState {
    /// Loads `RUN_DIR/docker.json`; a missing file is an empty state.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be read or is not a driver state.
    pub fn load(run_dir: &Path) -> anyhow::Result<DriverState> {
        let path = run_dir.join("docker.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{} is not a Docker driver state: {e}", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        Ok(DriverState {
            path,
            saved,
            pools: BTreeMap::new(),
        })
    }

    /// Writes the saved part.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn save(&self) -> Result<(), PlumbingError> {
        let json = serde_json::to_vec_pretty(&self.saved).map_err(|e| PlumbingError::Io {
            action: "encoding",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        plumbing::write_atomically(&self.path, &json, 0o600)
    }

    /// Forgets pools reserved longer than [`POOL_RESERVATION`] ago.
    pub fn expire_pools(&mut self, now: Instant) {
        self.pools
            .retain(|_, (since, _)| now.saturating_duration_since(*since) < POOL_RESERVATION);
    }

    /// Subnets reserved here and not in the store yet: pools being created and networks
    /// waiting for their name.
    pub fn reserved_subnets(&self) -> Vec<Subnet> {
        let unnamed = self
            .saved
            .unnamed
            .values()
            .filter_map(|r| r.subnet.as_deref()?.parse().ok());
        self.pools.keys().copied().chain(unnamed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = DriverState::load(dir.path()).unwrap();
        assert_eq!(state.saved, Saved::default());
        state.saved.networks.insert("d1".into(), "v1".into());
        state.saved.unnamed.insert(
            "d2".into(),
            NetworkRequest {
                name: "x".into(),
                subnet: Some("10.9.0.0/24".into()),
                ..NetworkRequest::default()
            },
        );
        let now = Instant::now();
        state
            .pools
            .insert("10.8.0.0/24".parse().unwrap(), (now, None));
        state.save().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("docker.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let loaded = DriverState::load(dir.path()).unwrap();
        assert_eq!(loaded.saved, state.saved);
        assert!(loaded.pools.is_empty(), "pools are not saved");
        let mut subnets: Vec<String> = state
            .reserved_subnets()
            .iter()
            .map(ToString::to_string)
            .collect();
        subnets.sort();
        assert_eq!(subnets, ["10.8.0.0/24", "10.9.0.0/24"]);
        state.expire_pools(now + POOL_RESERVATION);
        assert!(state.pools.is_empty());
        std::fs::write(dir.path().join("docker.json"), b"[1,2]").unwrap();
        assert!(DriverState::load(dir.path()).is_err());
    }
}
