//! The Azure China CDN REST API: signing, wire types, error classification,
//! a typed client, and [`emulator`], a faithful local stand-in.
//!
//! This module knows nothing about purgeq's queue; the pipeline decides what
//! to do with each [`ErrorClass`].

pub mod cache_rules;
pub mod client;
pub mod credentials;
pub mod emulator;
pub mod error;
pub mod signing;
pub mod types;
pub mod wire;

pub use client::{CdnClient, ClientSettings, DEFAULT_BASE_URL};
pub use credentials::{Credentials, KeyId, KeyValue};
pub use error::{CdnError, ErrorClass, ErrorType, TransportFailure};
pub use types::{Called, Endpoint, PurgeAccepted, PurgeProgress, UrlProgress, UrlState};
