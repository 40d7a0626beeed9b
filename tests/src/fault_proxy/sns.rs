//! SNS `Publish` as AWS checks it, and what was published.
//!
//! moto delivers only to SQS and Lambda subscribers here (nothing reaches
//! e-mail or an HTTPS chat endpoint), counts the size limit in characters
//! where AWS counts bytes with the message attributes, and accepts a
//! `MessageStructure=json` message without a `default` body or with bodies
//! that are not strings. The proxy refuses those as AWS does
//! (`InvalidParameter`) and keeps every message it let through, so a test
//! can read the body each protocol's subscribers would get.

use std::collections::BTreeMap;

use serde_json::Value;

/// SNS's limit: 256 KiB for the message and its attributes together.
pub const MAX_PUBLISH_BYTES: usize = 262_144;

/// One `Publish` that reached moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic_arn: String,
    pub subject: Option<String>,
    /// `json`, or `None` for one body for every protocol.
    pub message_structure: Option<String>,
    pub message: String,
    /// Attribute name → (data type, string value).
    pub attributes: BTreeMap<String, (String, String)>,
}

impl Published {
    /// The body `protocol`'s subscribers get: with `MessageStructure=json`
    /// the protocol's own entry, else `default`.
    pub fn body(&self, protocol: &str) -> Option<String> {
        if self.message_structure.as_deref() != Some("json") {
            return Some(self.message.clone());
        }
        let bodies: Value = serde_json::from_str(&self.message).ok()?;
        bodies.get(protocol).or_else(|| bodies.get("default"))?.as_str().map(String::from)
    }

    /// The bytes SNS counts against its limit.
    pub fn counted_bytes(&self) -> usize {
        self.message.len() + self.attributes.iter().map(|(k, (t, v))| k.len() + t.len() + v.len()).sum::<usize>()
    }
}

/// Reads a Publish request's form.
pub(super) fn parse_publish(form: &str) -> Published {
    let fields: BTreeMap<String, String> = form_urlencoded::parse(form.as_bytes()).into_owned().collect();
    let mut attributes = BTreeMap::new();
    for n in 1.. {
        let key = |suffix: &str| format!("MessageAttributes.entry.{n}.{suffix}");
        let Some(name) = fields.get(&key("Name")) else { break };
        let data_type = fields.get(&key("Value.DataType")).cloned().unwrap_or_default();
        let value = fields.get(&key("Value.StringValue")).cloned().unwrap_or_default();
        attributes.insert(name.clone(), (data_type, value));
    }
    Published {
        topic_arn: fields.get("TopicArn").cloned().unwrap_or_default(),
        subject: fields.get("Subject").cloned(),
        message_structure: fields.get("MessageStructure").cloned(),
        message: fields.get("Message").cloned().unwrap_or_default(),
        attributes,
    }
}

/// The protocols a `MessageStructure=json` message may name; each must
/// have a string body.
const PROTOCOLS: [&str; 11] =
    ["default", "email", "email-json", "http", "https", "sqs", "lambda", "sms", "firehose", "application", "APNS"];

/// AWS's `InvalidParameter` for a Publish moto would accept, if any.
pub(super) fn violation(published: &Published) -> Option<String> {
    if published.counted_bytes() > MAX_PUBLISH_BYTES {
        return Some(format!(
            "Invalid parameter: Message too long ({} bytes with its attributes; at most {MAX_PUBLISH_BYTES})",
            published.counted_bytes()
        ));
    }
    if let Some(subject) = &published.subject
        && (subject.is_empty() || subject.len() >= 100 || !subject.chars().all(|c| (' '..='~').contains(&c)))
    {
        return Some("Invalid parameter: Subject".into());
    }
    match published.message_structure.as_deref() {
        None => None,
        Some("json") => {
            let Ok(Value::Object(bodies)) = serde_json::from_str::<Value>(&published.message) else {
                return Some("Invalid parameter: Message Structure - JSON message body failed to parse".into());
            };
            if !bodies.get("default").is_some_and(Value::is_string) {
                return Some("Invalid parameter: Message Structure - No default entry in JSON message body".into());
            }
            PROTOCOLS
                .iter()
                .find(|p| bodies.get(**p).is_some_and(|b| !b.is_string()))
                .map(|p| format!("Invalid parameter: Message Structure - the {p} entry is not a string"))
        }
        Some(other) => Some(format!("Invalid parameter: MessageStructure {other:?}; only json is valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(structure: Option<&str>, message: &str) -> Published {
        Published {
            topic_arn: "arn:aws:sns:us-west-2:123456789012:t".into(),
            subject: Some("s".into()),
            message_structure: structure.map(String::from),
            message: message.into(),
            attributes: BTreeMap::from([("decision".to_string(), ("String".to_string(), "applied".to_string()))]),
        }
    }

    #[test]
    fn aws_counts_bytes_with_the_attributes_and_wants_a_default_body() {
        assert_eq!(violation(&publish(None, "plain")), None);
        assert_eq!(violation(&publish(Some("json"), r#"{"default":"d","sqs":"{}"}"#)), None);
        // 87,382 three-byte characters: under the limit in characters, over it in bytes.
        let wide = "→".repeat(87_382);
        assert!(wide.chars().count() < MAX_PUBLISH_BYTES);
        assert!(violation(&publish(None, &wide)).unwrap().contains("too long"));
        let exact = "x".repeat(MAX_PUBLISH_BYTES - "decision".len() - "String".len() - "applied".len());
        assert_eq!(violation(&publish(None, &exact)), None);
        assert!(violation(&publish(None, &(exact + "x"))).is_some());
        assert!(violation(&publish(Some("json"), r#"{"email":"e"}"#)).unwrap().contains("No default entry"));
        assert!(violation(&publish(Some("json"), r#"{"default":"d","https":{}}"#)).unwrap().contains("https"));
        assert!(violation(&publish(Some("json"), "not json")).unwrap().contains("failed to parse"));
        let json = publish(Some("json"), r#"{"default":"d","sqs":"q"}"#);
        assert_eq!((json.body("sqs").as_deref(), json.body("email").as_deref()), (Some("q"), Some("d")));
    }

    #[test]
    fn a_publish_form_is_read_back() {
        let form = "Action=Publish&TopicArn=arn%3At&Subject=hi&MessageStructure=json&Message=%7B%22default%22%3A%22d%22%7D\
                    &MessageAttributes.entry.1.Name=decision&MessageAttributes.entry.1.Value.DataType=String\
                    &MessageAttributes.entry.1.Value.StringValue=applied";
        let published = parse_publish(form);
        assert_eq!(published.topic_arn, "arn:t");
        assert_eq!(published.subject.as_deref(), Some("hi"));
        assert_eq!(published.body("email").as_deref(), Some("d"));
        assert_eq!(published.attributes["decision"], ("String".to_string(), "applied".to_string()));
    }
}
