//! Publishes a notification to the operators' SNS topic, one body per
//! protocol (`MessageStructure=json`).

use aws_sdk_sns::types::MessageAttributeValue;

use super::errors::aws_error;
use crate::error::Result;
use crate::run::notify::Notification;

/// Publishes one message; answers the SNS message id.
pub async fn publish(sns: &aws_sdk_sns::Client, topic_arn: &str, notification: &Notification) -> Result<String> {
    let mut request = sns
        .publish()
        .topic_arn(topic_arn)
        .subject(&notification.subject)
        .message_structure("json")
        .message(&notification.message);
    for (name, value) in &notification.attributes {
        request = request.message_attributes(
            *name,
            MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type set"),
        );
    }
    let out = request.send().await.map_err(|e| aws_error("Publish", e))?;
    Ok(out.message_id().unwrap_or_default().to_string())
}
