//! purgeq: durable, rate-limited cache purges for Azure China CDN.
//!
//! Modules, leaves first (each uses only those above it):
//! - [`clock`], [`rate`], [`quota`]: injectable time, the token bucket,
//!   quota days;
//! - [`cdn`]: the API client and [`cdn::emulator`];
//! - [`config`], [`target`]: typed settings; URL normalization and routing;
//! - [`report`]: the pipeline's typed status, which the API, metrics and
//!   systemd render;
//! - [`store`]: every SQL statement, the group-committing writer;
//! - [`http_server`], [`ingest`]: the connection server and the HTTP API;
//! - [`pipeline`], [`retention`], [`metrics`], [`logging`]: draining the
//!   queue, the clean-up task, observability;
//! - [`daemon`], [`signals`], [`cli`]: wiring and lifecycle, the commands.

pub mod cdn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod http_server;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod quota;
pub mod rate;
pub mod report;
pub mod retention;
pub mod signals;
pub mod store;
pub mod target;
