//! `purgeq endpoints`: the subscription's endpoints from the API, printed
//! as `[[cdn.endpoints]]` tables to paste into the configuration.

use std::time::Duration;

use clap::Args;

use super::{ConfigArgs, EXIT_TEMPFAIL, EXIT_UNAVAILABLE};
use crate::cdn::{CdnClient, ClientSettings, DEFAULT_BASE_URL, ErrorClass};

#[derive(Debug, Args)]
pub struct EndpointsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn run(args: EndpointsArgs) -> u8 {
    let settings = match args.config.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("purgeq: {error}");
            return crate::config::EXIT_CONFIG;
        }
    };
    let Some(credentials) = settings.derived.credentials.clone() else {
        eprintln!(
            "purgeq: no CDN credentials configured (cdn.subscription_id, cdn.key_id, cdn.key_value); \
             this command asks the real API"
        );
        return crate::config::EXIT_CONFIG;
    };
    let base_url = settings
        .derived
        .base_url
        .clone()
        .or_else(|| url::Url::parse(DEFAULT_BASE_URL).ok());
    let Some(base_url) = base_url else {
        return crate::config::EXIT_CONFIG;
    };
    let mut client_settings =
        ClientSettings::new(base_url, settings.cdn.subscription_id.clone(), credentials);
    client_settings.request_timeout = settings.cdn.request_timeout.min(Duration::from_secs(60));
    client_settings.connect_timeout = settings.cdn.connect_timeout;
    let client = match CdnClient::new(client_settings) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("purgeq: {error}");
            return EXIT_UNAVAILABLE;
        }
    };
    match client.list_endpoints().await {
        Ok(listed) => {
            crate::outln!(
                "# Endpoints of subscription {}",
                settings.cdn.subscription_id
            );
            for endpoint in listed.value {
                let state = if endpoint.enabled {
                    "enabled"
                } else {
                    "not enabled"
                };
                crate::outln!(
                    "\n# {state}, {}, CDN host {}\n[[cdn.endpoints]]\nid = \"{}\"\nhosts = [\"{}\"]",
                    endpoint.lifetime_status,
                    endpoint.host,
                    endpoint.id,
                    endpoint.custom_domain
                );
            }
            0
        }
        Err(error) => {
            eprintln!("purgeq: listing endpoints failed: {error}");
            match error.class() {
                ErrorClass::Credentials => crate::config::EXIT_CONFIG,
                ErrorClass::Transient | ErrorClass::Throttled => EXIT_TEMPFAIL,
                _ => EXIT_UNAVAILABLE,
            }
        }
    }
}
