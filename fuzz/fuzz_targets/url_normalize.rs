//! URL normalization, classification and routing, on any text.
//!
//! Beyond "never panics", it checks the properties the store relies on:
//! normalizing is idempotent (a stored URL normalizes to itself, so a
//! duplicate sent later is recognized), a routed target routes to the
//! same endpoint again, and every ancestor directory covers the URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purgeq::target::{self, HostPattern, Requested, Router};

fn router() -> Router {
    let mut router = Router::default();
    for (pattern, endpoint) in [
        ("example.com", "e1"),
        ("*.example.com", "e1"),
        ("static.example.cn", "e2"),
        ("xn--fiqs8s.cn", "e3"),
    ] {
        let pattern = HostPattern::parse(pattern).expect("valid pattern");
        router
            .add(pattern, endpoint.to_owned())
            .expect("no overlap");
    }
    router
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(text) else {
        return;
    };
    let max_length = 2048;

    if let Ok(url) = target::normalize(raw, max_length) {
        let again = target::normalize(url.as_str(), max_length)
            .unwrap_or_else(|e| panic!("{url} normalized from {raw:?} is refused: {e}"));
        assert_eq!(url, again, "normalizing {raw:?} is not idempotent");
    }

    let requested = match mode % 3 {
        0 => Requested::File,
        1 => Requested::Directory,
        _ => Requested::ByTrailingSlash,
    };
    let router = router();
    if let Ok(found) = router.target(raw, requested, max_length) {
        let again = router
            .target(&found.url, requested, max_length)
            .unwrap_or_else(|e| panic!("{} from {raw:?} is refused: {e}", found.url));
        assert_eq!(found.url, again.url, "{raw:?}");
        assert_eq!(found.endpoint_id, again.endpoint_id, "{raw:?}");
        assert_eq!(found.kind, again.kind, "{raw:?}");
        for directory in target::ancestor_directories(&found.url) {
            assert!(
                target::covers(&directory, &found.url),
                "{directory} does not cover {}",
                found.url
            );
        }
    }
});
