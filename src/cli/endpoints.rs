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
        // No credentials: `serve` sends to its built-in emulator, whose
        // endpoints are the configured ones (or the demo endpoint).
        let emulated = settings.with_demo_endpoint();
        crate::outln!(
            "# No CDN credentials (cdn.subscription_id, cdn.key_id, cdn.key_value): `purgeq serve`\n\
             # sends to its built-in emulator, which serves these endpoints. Set the credentials\n\
             # to list the subscription's real endpoints."
        );
        for endpoint in &emulated.cdn.endpoints {
            crate::outln!("\n{}", endpoint_table(&endpoint.id, &endpoint.hosts, None));
        }
        return 0;
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
            // The API lists an endpoint once per custom domain: one table
            // per endpoint id, with every domain (an id listed twice is a
            // configuration error).
            let mut tables: Vec<(String, Vec<String>, String)> = Vec::new();
            for endpoint in listed.value {
                let state = if endpoint.enabled {
                    "enabled"
                } else {
                    "not enabled"
                };
                match tables.iter_mut().find(|(id, _, _)| *id == endpoint.id) {
                    Some((_, hosts, _)) => hosts.push(endpoint.custom_domain),
                    None => tables.push((
                        endpoint.id,
                        vec![endpoint.custom_domain],
                        format!(
                            "{state}, {}, CDN host {}",
                            endpoint.lifetime_status, endpoint.host
                        ),
                    )),
                }
            }
            for (id, hosts, note) in &tables {
                let rules = cache_rules_note(&client, id).await;
                crate::outln!(
                    "\n{}",
                    endpoint_table(id, hosts, Some(&format!("{note}\n# {rules}")))
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

/// The endpoint's cache policy in one comment line: what the daemon will
/// assume from it (query variants coalesced, copies expired by TTL).
async fn cache_rules_note(client: &CdnClient, endpoint_id: &str) -> String {
    match client.get_cache_policy(endpoint_id).await {
        Ok(called) => format!("cache rules: {}", called.value),
        Err(error) => format!("cache rules: cannot be read ({error})"),
    }
}

/// A `[[cdn.endpoints]]` table to paste into the configuration.
fn endpoint_table(id: &str, hosts: &[String], note: Option<&str>) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let note = note.map(|n| format!("# {n}\n")).unwrap_or_default();
    format!(
        "{note}[[cdn.endpoints]]\nid = {id:?}\nhosts = [{}]",
        hosts.join(", ")
    )
}
