//! The signer reproduces every vector computed with the reference
//! implementation (`tests/fixtures/signature_vectors.json`).

use purgeq::cdn::signing;
use purgeq::cdn::{KeyId, KeyValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    method: String,
    url: String,
    request_date: String,
    key_id: String,
    key_value: String,
    string_to_sign: String,
    authorization: String,
}

#[test]
fn every_vector_is_reproduced() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signature_vectors.json"
    ))
    .expect("fixture file");
    let vectors: Vectors = serde_json::from_str(&text).expect("fixture JSON");
    assert!(vectors.vectors.len() >= 6, "the fixture lost vectors");
    for v in &vectors.vectors {
        let url = url::Url::parse(&v.url).expect("vector URL");
        let to_sign = signing::string_to_sign(&v.method, &url, &v.request_date);
        assert_eq!(to_sign, v.string_to_sign, "string to sign for {}", v.url);
        let key_value = KeyValue::new(v.key_value.clone());
        let header = signing::authorization(&KeyId::new(v.key_id.clone()), &key_value, &to_sign);
        assert_eq!(header, v.authorization, "authorization for {}", v.url);
        let (key_id, signature) = signing::parse_authorization(&header).expect("parses back");
        assert_eq!(key_id, v.key_id);
        assert!(signing::verify_signature(&key_value, &to_sign, signature));
    }
}
