//! Talking to the daemon over its socket or TCP, for the commands that do.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{
    ConfigArgs, EXIT_DATAERR, EXIT_NOPERM, EXIT_SOFTWARE, EXIT_TEMPFAIL, EXIT_UNAVAILABLE,
    EXIT_USAGE,
};

/// Where to find the daemon.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The daemon's Unix socket (default: ingest.socket of the configuration).
    #[arg(long, value_name = "PATH", conflicts_with = "http")]
    pub socket: Option<PathBuf>,
    /// The daemon's TCP address, e.g. 127.0.0.1:8088.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Bearer token for TCP (default: ingest.token of the configuration).
    #[arg(long, env = "PURGEQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where the daemon is.
pub struct Daemon {
    pub client: reqwest::Client,
    pub base: String,
    /// Where the daemon was looked for, for errors: "the socket PATH" or
    /// the TCP address (`http://localhost/…` named neither).
    pub place: String,
}

impl Daemon {
    pub fn locate(args: &DaemonArgs) -> Result<Daemon, (u8, String)> {
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(addr) = &args.http {
            let base = if addr.starts_with("http://") || addr.starts_with("https://") {
                addr.trim_end_matches('/').to_owned()
            } else {
                format!("http://{addr}")
            };
            let token = match &args.token {
                Some(token) => Some(token.clone()),
                // The configuration's own token, when it can be read.
                None => args
                    .config
                    .load_for_client()
                    .ok()
                    .and_then(|s| s.ingest.token_text()),
            };
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(token) = token {
                let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| {
                        (
                            EXIT_USAGE,
                            "the token has characters a header cannot carry".to_owned(),
                        )
                    })?;
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            let client = builder
                .default_headers(headers)
                .build()
                .map_err(|e| (EXIT_SOFTWARE, e.to_string()))?;
            return Ok(Daemon {
                client,
                place: base.clone(),
                base,
            });
        }
        let socket = match &args.socket {
            Some(path) => path.clone(),
            None => {
                let settings = args
                    .config
                    .load_for_client()
                    .map_err(|e| (crate::config::EXIT_CONFIG, e.to_string()))?;
                match (&settings.derived.socket_path, settings.derived.http_addr) {
                    (Some(path), _) => path.clone(),
                    (None, Some(addr)) => {
                        let client = builder
                            .build()
                            .map_err(|e| (EXIT_SOFTWARE, e.to_string()))?;
                        return Ok(Daemon {
                            client,
                            base: format!("http://{addr}"),
                            place: format!("http://{addr} (ingest.http)"),
                        });
                    }
                    (None, None) => {
                        return Err((
                            EXIT_USAGE,
                            "no --socket or --http given and none configured".into(),
                        ));
                    }
                }
            }
        };
        let place = format!("the socket {}", socket.display());
        let client = builder
            .unix_socket(socket)
            .build()
            .map_err(|e| (EXIT_SOFTWARE, e.to_string()))?;
        Ok(Daemon {
            client,
            base: "http://localhost".to_owned(),
            place,
        })
    }
}

/// The daemon's error JSON, printed as the daemon worded it.
fn describe_error(status: reqwest::StatusCode, body: &Value) -> String {
    let error = &body["error"];
    let details = error["details"].as_array().filter(|d| !d.is_empty());
    let mut text = match error["message"].as_str() {
        // The details list every refused URL, the first included: the
        // message's "first: …" would name it twice (issue 29, item 16).
        Some(message) if details.is_some() => format!(
            "{} (HTTP {}):",
            message.split("; first: ").next().unwrap_or(message),
            status.as_u16()
        ),
        Some(message) => format!("{message} (HTTP {})", status.as_u16()),
        None => format!("the daemon answered HTTP {}", status.as_u16()),
    };
    if let Some(details) = details {
        for detail in details {
            text.push_str(&format!(
                "\n  {} {}: {}",
                detail["field"].as_str().unwrap_or("?"),
                detail["url"].as_str().unwrap_or("?"),
                detail["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    text
}

fn exit_for(status: reqwest::StatusCode) -> u8 {
    if status.is_server_error() {
        EXIT_TEMPFAIL
    } else if matches!(status.as_u16(), 401 | 403) {
        EXIT_NOPERM
    } else {
        EXIT_DATAERR
    }
}

/// An error with every cause in its chain: reqwest's own text ("error
/// sending request for url …") hides the OS error that says what is wrong.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

pub async fn call(
    daemon: &Daemon,
    request: reqwest::RequestBuilder,
) -> Result<Value, (u8, String)> {
    let response = request.send().await.map_err(|e| {
        (
            EXIT_UNAVAILABLE,
            format!(
                "cannot reach the daemon at {} ({}); is it running? (systemctl status purgeq)",
                daemon.place,
                with_causes(&e)
            ),
        )
    })?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| {
        (
            EXIT_UNAVAILABLE,
            format!("unreadable answer from the daemon: {e}"),
        )
    })?;
    if status.is_success() {
        Ok(body)
    } else {
        Err((exit_for(status), describe_error(status, &body)))
    }
}

impl Daemon {
    /// `POST path` with no body.
    pub async fn post(&self, path: &str) -> Result<Value, (u8, String)> {
        call(self, self.client.post(format!("{}{path}", self.base))).await
    }

    /// `GET path`, with the daemon's error JSON turned into its message.
    pub async fn get(&self, path: &str) -> Result<Value, (u8, String)> {
        call(self, self.client.get(format!("{}{path}", self.base))).await
    }
}
