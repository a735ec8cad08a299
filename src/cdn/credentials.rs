//! API credentials, typed so that the secret half cannot leak by accident.
//!
//! `KeyValue` wraps a [`secrecy::SecretString`]: its `Debug` prints a
//! placeholder, it has no `Display` and no `Serialize`, and its memory is
//! zeroed on drop. The only way to read it is [`KeyValue::expose`], which is
//! called in exactly one place: the HMAC in [`super::signing`].

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The public identifier of an API key (sent in every `Authorization`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyId").field(&self.0).finish()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret used to sign requests. Never logged, printed or stored.
#[derive(Clone)]
pub struct KeyValue(SecretString);

impl KeyValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// Reads the secret. Only request signing has a reason to call this.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyValue([redacted])")
    }
}

/// Read from configuration. There is deliberately no `Serialize`.
impl<'de> serde::Deserialize<'de> for KeyValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(KeyValue::new)
    }
}

/// A key id and its value: everything needed to sign.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub key_id: KeyId,
    pub key_value: KeyValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let credentials = Credentials {
            key_id: KeyId::new("key-1"),
            key_value: KeyValue::new("very-secret-value"),
        };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("key-1"));
        assert!(!printed.contains("very-secret-value"));
    }
}
