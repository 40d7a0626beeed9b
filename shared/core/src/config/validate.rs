//! The rules a setting's value must meet beyond its type: object names
//! Kubernetes and EKS accept, and thresholds one expansion can satisfy.

use ipnet::Ipv4Net;

use super::Thresholds;
use crate::error::{Result, SettingsError};

pub(super) fn check_nodeclass_name(name: &str) -> std::result::Result<(), String> {
    validate_object_name(name)?;
    if name == "default" {
        return Err(
            "EKS manages the `default` NodeClass and resets changes to it; name a custom NodeClass such as `headroom`"
                .into(),
        );
    }
    Ok(())
}

pub(super) fn check_nodepool_name(name: &str) -> std::result::Result<(), String> {
    validate_object_name(name)?;
    if name == "general-purpose" || name == "system" {
        return Err("built-in NodePools are managed by EKS; name a custom NodePool such as `headroom`".into());
    }
    Ok(())
}

/// Refuses settings under which expanding can never bring an AZ back above
/// its thresholds, so that every run would add another subnet: one new,
/// empty subnet must clear both thresholds. (Whether one VPC CIDR holds a
/// subnet for each of the cluster's AZs depends on the cluster; the planner
/// checks it before anything is associated.)
pub(super) fn check_convergence(subnet_prefix: u8, thresholds: Thresholds) -> Result<()> {
    let subnet = Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, subnet_prefix).expect("prefix checked");
    let empty = crate::capacity::subnet_capacity(subnet, &crate::capacity::AddressUsage::default());
    if empty.free_ips < thresholds.min_free_ips_per_az || empty.free_prefixes < thresholds.min_free_prefixes_per_az {
        return Err(invalid(
            "SUBNET_PREFIX",
            &subnet_prefix.to_string(),
            format!(
                "a new /{subnet_prefix} subnet holds {} free IPs and {} free /28 prefixes, below MIN_FREE_IPS_PER_AZ ({}) \
                 or MIN_FREE_PREFIXES_PER_AZ ({}), so no expansion could ever clear them; use a shorter SUBNET_PREFIX \
                 (the default /19 holds 8,187 IPs and 510 prefixes) or lower the thresholds",
                empty.free_ips,
                empty.free_prefixes,
                thresholds.min_free_ips_per_az,
                thresholds.min_free_prefixes_per_az
            ),
        ));
    }
    Ok(())
}

/// EKS cluster names: 1-100 characters, alphanumerics, `-` and `_`, starting alphanumeric.
pub fn validate_cluster_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err("EKS cluster names are 1-100 letters, digits, `-` or `_`, starting with a letter or digit".into())
    }
}

/// Kubernetes object names (RFC 1123 subdomain).
fn validate_object_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err("Kubernetes names are lowercase letters, digits, `-` and `.`, starting and ending alphanumeric".into())
    }
}

/// A setting's value is wrong: which, what it held, why and what to do.
pub(super) fn invalid(setting: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Config { setting, value: value.to_string(), reason: reason.into() }
}
