//! A run over several machines: this node's place and its link to the coordinator
//! (`ews coordinator`, burn-collective's global orchestrator) and to the other nodes.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use burn::collective::CollectiveConfig;

use crate::TrainError;

/// This process's place in a run over several machines (`nodes` > 1 in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLink {
    /// This machine's index, from 0 (node 0 evaluates and writes the run's files).
    pub rank: usize,
    /// The coordinator's address, `host:port` (or `ws://host:port`).
    pub coordinator: String,
    /// This node's address as the other nodes reach it, `host:port`: its port serves this
    /// node's tensors to them.
    pub address: String,
}

impl NodeLink {
    /// Checks the link against the run's `nodes`; the error names the flag to fix.
    pub fn check(&self, nodes: usize) -> Result<(), TrainError> {
        let bad = |why: String| Err(TrainError::Config(why));
        if self.rank >= nodes {
            return bad(format!(
                "--node-rank {} must be below --nodes {nodes} (node ranks count from 0)",
                self.rank
            ));
        }
        port_of("--coordinator", &self.coordinator)?;
        port_of("--node-address", &self.address)?;
        if url(&self.coordinator) == url(&self.address) {
            return bad(format!(
                "--node-address {} is the coordinator's address: give this node a port of its own",
                self.address
            ));
        }
        Ok(())
    }

    /// Waits up to `limit` for the coordinator to accept connections (burn-collective would
    /// retry forever); the error says to start it.
    pub fn reach_coordinator(&self, limit: Duration) -> Result<(), TrainError> {
        let started = Instant::now();
        let target = host_and_port(&self.coordinator);
        loop {
            let reached = target.to_socket_addrs().is_ok_and(|mut addresses| {
                addresses.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
            });
            if reached {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(TrainError::Run(format!(
                    "no coordinator answers at {} after {} s: start `ews coordinator --port PORT` on that machine first, or correct --coordinator",
                    self.coordinator,
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `config` joined to the coordinator as one of `nodes` machines.
    pub(super) fn configure(&self, config: CollectiveConfig, nodes: usize) -> CollectiveConfig {
        let port = port_of("--node-address", &self.address).expect("checked before the run");
        config
            .with_num_nodes(nodes as u32)
            .with_global_address(url(&self.coordinator).parse().expect("any text"))
            .with_node_address(url(&self.address).parse().expect("any text"))
            .with_data_service_port(port)
    }
}

/// `address` as the WebSocket URL burn-collective connects to.
fn url(address: &str) -> String {
    let bare = address.trim_end_matches('/');
    if bare.contains("://") {
        bare.to_string()
    } else {
        format!("ws://{bare}")
    }
}

/// `host:port` without the scheme.
fn host_and_port(address: &str) -> String {
    let bare = url(address);
    bare.split_once("://")
        .map_or(bare.as_str(), |(_, rest)| rest)
        .to_string()
}

/// The port of `host:port` (or `ws://host:port`), for the error naming `flag`.
fn port_of(flag: &str, address: &str) -> Result<u16, TrainError> {
    match host_and_port(address).rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port.parse::<u16>().map_err(|_| {
            TrainError::Config(format!(
                "{flag} {address}: the port must be a number below 65536"
            ))
        }),
        _ => Err(TrainError::Config(format!(
            "{flag} {address}: give host:port, e.g. 10.0.0.1:3000"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(rank: usize, coordinator: &str, address: &str) -> NodeLink {
        NodeLink {
            rank,
            coordinator: coordinator.into(),
            address: address.into(),
        }
    }

    #[test]
    fn addresses_take_host_and_port_with_or_without_the_scheme() {
        assert!(
            link(1, "10.0.0.1:3000", "ws://10.0.0.2:3001")
                .check(2)
                .is_ok()
        );
        assert_eq!(url("10.0.0.1:3000"), "ws://10.0.0.1:3000");
        assert_eq!(url("ws://h:1/"), "ws://h:1");
        assert_eq!(port_of("--x", "ws://h:3001").unwrap(), 3001);
    }

    #[test]
    fn bad_links_name_the_flag() {
        let err = |l: NodeLink| l.check(2).unwrap_err().to_string();
        assert!(err(link(2, "h:1", "g:2")).contains("--node-rank 2"));
        assert!(err(link(0, "h", "g:2")).contains("--coordinator h"));
        assert!(err(link(0, "h:1", "g:port")).contains("--node-address g:port"));
        assert!(err(link(0, "h:1", "h:1")).contains("port of its own"));
    }

    #[test]
    fn a_missing_coordinator_is_reported_in_bounded_time() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let l = link(1, &format!("127.0.0.1:{port}"), "127.0.0.1:1");
        let err = l.reach_coordinator(Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("ews coordinator"), "{err}");
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listening.local_addr().unwrap().port();
        let l = link(1, &format!("127.0.0.1:{port}"), "127.0.0.1:1");
        l.reach_coordinator(Duration::from_secs(1)).unwrap();
    }
}
