//! The member's client of its own gRPC API, for the server-side recipes.
//!
//! The Lock and Election services run etcd's concurrency recipes
//! ([`crate::concurrency`]) through an ordinary v3 client connected to this
//! member's own gRPC address, as etcd's `v3lock`/`v3election` use an
//! in-process client: the recipes then see exactly what a remote client
//! sees (followers forward writes, reads are linearizable, watches replay
//! history). The connection is made on first use and shared; requests on
//! it carry no deadline of their own, since a Lock may wait for as long as
//! the holder before it keeps its lease.

use std::net::SocketAddr;

use etcd_client::Client;
use tokio::sync::OnceCell;
use tonic::Status;

use crate::concurrency::RecipeError;

#[derive(Clone)]
pub struct Loopback {
    address: String,
    client: std::sync::Arc<OnceCell<Client>>,
}

impl Loopback {
    /// A client of the API listening on `listening` (an unspecified address
    /// such as 0.0.0.0 is reached through loopback).
    pub fn new(listening: SocketAddr) -> Loopback {
        let ip = if listening.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            listening.ip()
        };
        Loopback {
            address: SocketAddr::new(ip, listening.port()).to_string(),
            client: std::sync::Arc::new(OnceCell::new()),
        }
    }

    /// The shared client, connected on first use.
    pub async fn client(&self) -> Result<Client, Status> {
        self.client
            .get_or_try_init(|| async { Client::connect([self.address.as_str()], None).await })
            .await
            .cloned()
            .map_err(|e| {
                Status::unavailable(format!(
                    "cannot reach this member's own gRPC API at {}: {e}",
                    self.address
                ))
            })
    }
}

/// A recipe's failure as etcd's server answers it. etcd's recipes run on
/// its Go client, which turns the server's errors it knows (messages
/// `etcdserver: ...`) into plain errors; returned from a gRPC handler,
/// those travel with code Unknown and the same message (etcd 3.4 answers a
/// Lock on a missing lease `Unknown "etcdserver: requested lease not
/// found"`). Other statuses pass through unchanged; the recipes' own errors
/// ("election: no leader", "election: not leader") are Unknown too.
pub fn recipe_status(error: RecipeError) -> Status {
    match error {
        RecipeError::Client(etcd_client::Error::GRpcStatus(status)) => {
            if status.message().starts_with("etcdserver: ") {
                Status::unknown(status.message())
            } else {
                status
            }
        }
        RecipeError::Client(other) => Status::unavailable(other.to_string()),
        own => Status::unknown(own.to_string()),
    }
}
