//! purgeq: durable, rate-limited cache purges for Azure China CDN.
//!
//! Modules, leaves first (each uses only those above it; no cycles):
//! - [`clock`], [`rate`], [`quota`], [`ledger`], [`target`], [`report`], [`fleet`],
//!   [`database_url`],
//!   [`http_server`], [`signals`]: injectable time, the token bucket, quota
//!   days; URL normalization and routing; the pipeline's typed status; the
//!   connection server; signal streams. Leaves: they use no other module;
//! - [`origin_cache`]: what the caches in front of the origin are asked,
//!   and what their answers mean (pure, over [`target`]);
//! - [`verify`]: whether an edge serves what the origin serves, and what
//!   follows (pure, a leaf);
//! - [`cdn`]: the API client and [`cdn::emulator`] (which serves through
//!   [`http_server`]);
//! - [`config`]: typed settings (credentials are [`cdn`] types);
//! - [`planner`]: how the day's quota is spent (pure: promotions, lanes);
//! - [`logging`], [`store`]: log setup; every SQL statement and the
//!   group-committing writer;
//! - [`forecast`]: when a request is expected to be done (pure, over the
//!   [`planner`]; its times written as the [`store`] writes them);
//! - [`metrics`]: Prometheus, from the store and the [`report`];
//! - [`ingest`]: the HTTP API;
//! - [`pipeline`], [`retention`]: draining the queue, the clean-up task;
//! - [`ui`]: the status page (over [`ingest`]'s state and types);
//! - [`daemon`], [`cli`]: wiring and lifecycle, the commands.

pub mod cdn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod database_url;
pub mod fleet;
pub mod forecast;
pub mod http_server;
pub mod ingest;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod origin_cache;
pub mod pipeline;
pub mod planner;
pub mod quota;
pub mod rate;
pub mod report;
pub mod retention;
pub mod signals;
pub mod store;
pub mod tags;
pub mod target;
pub mod ui;
pub mod verify;
