//! Hosting the placement driver on core 0 of its node: answers the driver's requests from
//! the `Placement` state and makes that state durable in `DATA_DIR/pd.toml`.
//!
//! Durability without blocking the core: a write (temporary file, fsync, rename, fsync of the
//! directory) runs on glommio's blocking thread pool, one at a time; changes made while a
//! write is in flight are coalesced into the next one. Answers that must not leave before
//! their change is durable (a Region id from `AskSplit`) wait for the write that covers their
//! version:
//!
//! ```text
//!  AskSplit ─► Placement::ask_split (version v) ─► wait(v) ─┐
//!  Heartbeat ─► Placement::on_heartbeat ─► Ack now          │
//!                      next_write() ─► blocking pool: pd.toml (v' ≥ v) ─► on_written(v') ─► answers ≤ v'
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{ClientError, ClientOp, ClientReply};

use crate::meta::DataMeta;
use crate::placement::Placement;

/// The file the driver's metadata lives in, inside the data directory.
pub const PD_FILE: &str = "pd.toml";

/// An answer and whether it may leave before the driver's state is durable.
pub enum PdAnswer {
    Now(Result<ClientReply, ClientError>),
    WhenDurable(Result<ClientReply, ClientError>),
}

/// The driver as hosted by a core; `W` is whoever waits for an answer.
pub struct PdHost<W> {
    placement: Placement,
    data_dir: PathBuf,
    started: Instant,
    durable_version: u64,
    writing: bool,
    waiting: Vec<(u64, W, Result<ClientReply, ClientError>)>,
}

impl<W> PdHost<W> {
    /// Loads `pd.toml`, or starts from the cluster's first layout when there is none.
    ///
    /// # Errors
    /// When the file exists but cannot be read or is damaged.
    pub fn open(data_dir: &Path, meta: &DataMeta) -> Result<PdHost<W>, String> {
        let path = data_dir.join(PD_FILE);
        let (placement, durable_version) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let placement = Placement::decode(&text)
                    .map_err(|e| format!("{} is damaged: {e}", path.display()))?;
                let version = placement.version();
                (placement, version)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Placement::from_meta(meta), 0),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(PdHost {
            placement,
            data_dir: data_dir.to_path_buf(),
            started: Instant::now(),
            durable_version,
            writing: false,
            waiting: Vec::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Serves one driver request; `None` if `op` is not one.
    pub fn on_request(&mut self, region: RegionId, op: &ClientOp) -> Option<PdAnswer> {
        let now_ms = self.now_ms();
        let answer = match op {
            ClientOp::StoreHeartbeat { node_id, regions } => PdAnswer::Now(
                self.placement
                    .on_heartbeat(*node_id, regions, now_ms)
                    .map(|answer| ClientReply::Heartbeat {
                        moves: answer.moves,
                        stale: answer.stale,
                        stores: answer.stores,
                    })
                    .map_err(|message| ClientError::InvalidRequest { message }),
            ),
            ClientOp::MoveRegion { from, to } => {
                match self.placement.order_move(region, *from, *to) {
                    Ok(order) => {
                        tracing::info!(?order, "placement driver ordered a move");
                        PdAnswer::WhenDurable(Ok(ClientReply::Ack))
                    }
                    Err(message) => PdAnswer::Now(Err(ClientError::InvalidRequest { message })),
                }
            }
            ClientOp::CancelMove => match self.placement.cancel_move(region) {
                Ok(detail) => {
                    tracing::info!(region = region.0, %detail, "placement driver cancels a move");
                    PdAnswer::WhenDurable(Ok(ClientReply::MoveStep { done: true, detail }))
                }
                Err(message) => PdAnswer::Now(Err(ClientError::InvalidRequest { message })),
            },
            ClientOp::Join { store } => self.on_join(store),
            ClientOp::AskSplit => match self.placement.ask_split(region) {
                Ok(new_region_id) => {
                    PdAnswer::WhenDurable(Ok(ClientReply::SplitIds { new_region_id }))
                }
                Err(message) => PdAnswer::Now(Err(ClientError::InvalidRequest { message })),
            },
            ClientOp::PdStatus => PdAnswer::Now(Ok(ClientReply::Pd(self.placement.status(now_ms)))),
            _ => return None,
        };
        Some(answer)
    }

    /// Turns balancing (of Regions, and of leaders) on or off and sets how long a silent
    /// store still counts as alive.
    pub fn configure(&mut self, balance: bool, balance_leaders: bool, store_alive_ms: u64) {
        self.placement.balance = balance;
        self.placement.balance_leaders = balance_leaders;
        self.placement.store_alive_ms = store_alive_ms;
    }

    /// A store joins the running cluster: it starts with no Regions (the balancer, or
    /// `tessera move`, gives it some). Answered once the driver's metadata holding it is
    /// durable; the other stores learn it from their next heartbeat's answer.
    fn on_join(&mut self, store: &tessera_transport::client::StoreDescriptor) -> PdAnswer {
        let invalid = |message| PdAnswer::Now(Err(ClientError::InvalidRequest { message }));
        let joiner = match super::pd::store_meta(store) {
            Ok(joiner) => joiner,
            Err(message) => return invalid(message),
        };
        if let Err(message) = self.placement.add_store(joiner) {
            return invalid(message);
        }
        let status = self.placement.status(0);
        PdAnswer::WhenDurable(Ok(ClientReply::Joined {
            ready: true,
            cluster_id: status.cluster_id,
            regions: Vec::new(),
            stores: self.placement.store_descriptors(),
        }))
    }

    /// True if `node` is a store the driver knows.
    pub fn knows_store(&self, node: u64) -> bool {
        self.placement.stores().contains_key(&node)
    }

    /// Holds `result` for `waiter` until the current version is durable.
    pub fn wait(&mut self, waiter: W, result: Result<ClientReply, ClientError>) {
        self.waiting
            .push((self.placement.version(), waiter, result));
    }

    /// The next write to start, if one is needed and none is in flight: the version it
    /// makes durable, the directory and the bytes.
    pub fn next_write(&mut self) -> Option<(u64, PathBuf, Vec<u8>)> {
        if self.writing || self.placement.version() <= self.durable_version {
            return None;
        }
        self.writing = true;
        let bytes = self.placement.encode().into_bytes();
        Some((self.placement.version(), self.data_dir.clone(), bytes))
    }

    /// A write finished: the answers it releases (failed ones become errors).
    pub fn on_written(
        &mut self,
        version: u64,
        outcome: Result<(), String>,
    ) -> Vec<(W, Result<ClientReply, ClientError>)> {
        self.writing = false;
        let mut released = Vec::new();
        match outcome {
            Ok(()) => {
                self.durable_version = self.durable_version.max(version);
                let durable = self.durable_version;
                let (done, still): (Vec<_>, Vec<_>) =
                    self.waiting.drain(..).partition(|(v, _, _)| *v <= durable);
                self.waiting = still;
                released.extend(done.into_iter().map(|(_, w, r)| (w, r)));
            }
            Err(message) => {
                tracing::error!(%message, "writing the placement driver's metadata failed");
                // Nothing that waited may be told it succeeded; the ids are burnt, not reused.
                let error = ClientError::Internal {
                    message: format!("placement driver metadata not durable: {message}"),
                };
                released.extend(
                    self.waiting
                        .drain(..)
                        .map(|(_, w, _)| (w, Err(error.clone()))),
                );
            }
        }
        released
    }
}

/// Who hosts the driver, for the error a store gets when it asks the wrong node.
pub fn not_here(meta: &DataMeta) -> ClientError {
    ClientError::InvalidRequest {
        message: format!(
            "the placement driver runs on node {} ({}), not here",
            meta.pd_node(),
            meta.pd_addr().unwrap_or_default()
        ),
    }
}

/// True if this node hosts the driver.
pub fn hosts_pd(meta: &DataMeta) -> bool {
    NodeId(meta.pd_node()) == NodeId(meta.node_id)
}
