//! The two request body parsers of the ingest API: purgeq's own
//! `POST /v1/purges` and the CDN-shaped `POST …/endpoints/{eid}/purges`.
//!
//! The first byte picks the parser, the rest is the body. An accepted body
//! must be all-or-nothing sound: within the URL limit, every target routed
//! to a configured endpoint (to `eid` itself for the CDN dialect), and
//! every stored URL a fixed point of normalization.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use purgeq::config::Settings;
use purgeq::ingest::{azure, v1};
use purgeq::target::PurgeTarget;

const CONFIG: &str = r#"
[ingest]
max_urls_per_request = 50
max_url_length = 300
[[cdn.endpoints]]
id = "e1"
hosts = ["example.com", "*.example.com"]
[[cdn.endpoints]]
id = "e2"
hosts = ["static.example.cn"]
"#;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("purgeq-fuzz-{}.toml", std::process::id()));
        std::fs::write(&path, CONFIG).expect("write the fuzz config");
        let settings = Settings::load(Some(&path), &Default::default()).expect("valid config");
        let _ = std::fs::remove_file(&path);
        settings
    })
}

fn check(targets: &[PurgeTarget], settings: &Settings, only: Option<&str>) {
    assert!(!targets.is_empty(), "accepted a body with no URL");
    assert!(targets.len() <= settings.ingest.max_urls_per_request);
    for target in targets {
        assert!(["e1", "e2"].contains(&target.endpoint_id.as_str()));
        if let Some(eid) = only {
            assert_eq!(target.endpoint_id, eid);
        }
        let again = purgeq::target::normalize(&target.url, settings.ingest.max_url_length)
            .unwrap_or_else(|e| panic!("stored URL {} is refused: {e}", target.url));
        assert_eq!(again.as_str(), target.url);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&dialect, body)) = data.split_first() else {
        return;
    };
    let settings = settings();
    if dialect % 2 == 0 {
        if let Ok(intent) = v1::parse_intent(settings, body) {
            check(&intent.targets, settings, None);
            assert!(intent.label.is_none_or(|l| l.len() <= 256));
        }
    } else if let Ok(targets) = azure::parse_purge(settings, "e1", body) {
        check(&targets, settings, Some("e1"));
    }
});
