//! Free addresses and free aligned /28 prefixes of a subnet.
//!
//! `AvailableIpAddressCount` counts single free addresses, but the CNI in
//! prefix mode needs 16 contiguous, /28-aligned ones (aws-facts.md §2), so a
//! subnet can show hundreds of free IPs and still fail every prefix request.
//! This module computes both from what occupies the subnet: the five
//! AWS-reserved addresses, ENI private IPs, ENI prefixes and subnet CIDR
//! reservations. It sorts and merges intervals: O(n log n) in the number of
//! occupants, independent of the subnet size.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::Subnet;

/// Addresses the CNI takes at a time in prefix mode.
pub const PREFIX_LEN: u8 = 28;
const PREFIX_SIZE: u64 = 1 << (32 - PREFIX_LEN);

/// What occupies a subnet, as read from DescribeNetworkInterfaces and
/// DescribeSubnetCidrReservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressUsage {
    pub private_ips: Vec<Ipv4Addr>,
    pub prefixes: Vec<Ipv4Net>,
    pub reservations: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetCapacity {
    pub total_ips: u64,
    pub free_ips: u64,
    pub free_prefixes: u64,
}

impl SubnetCapacity {
    /// Share of the subnet in use, 0-100.
    pub fn utilisation_percent(&self) -> f64 {
        if self.total_ips == 0 {
            return 100.0;
        }
        100.0 * (self.total_ips - self.free_ips) as f64 / self.total_ips as f64
    }

    /// Trusts the lower of our count and EC2's `AvailableIpAddressCount`:
    /// EC2 also counts occupants we cannot see (other services' ENIs being
    /// created right now), and never-seen space must not be promised.
    pub fn capped_by_reported_free(mut self, available_ip_address_count: Option<u64>) -> Self {
        if let Some(reported) = available_ip_address_count {
            self.free_ips = self.free_ips.min(reported);
            // Each free prefix needs 16 free addresses.
            self.free_prefixes = self.free_prefixes.min(self.free_ips / PREFIX_SIZE);
        }
        self
    }
}

/// Capacity of `cidr` given what occupies it. Occupants outside the subnet
/// are ignored; overlapping occupants are counted once.
pub fn subnet_capacity(cidr: Ipv4Net, usage: &AddressUsage) -> SubnetCapacity {
    let base = u64::from(u32::from(cidr.network()));
    let size = 1u64 << (32 - cidr.prefix_len());
    let last = base + size - 1;

    let mut occupied: Vec<(u64, u64)> =
        Vec::with_capacity(2 + usage.private_ips.len() + usage.prefixes.len() + usage.reservations.len());
    // AWS reserves the network address, the next three, and the last one.
    occupied.push((base, (base + 3).min(last)));
    occupied.push((last, last));
    occupied.extend(usage.private_ips.iter().map(|ip| {
        let a = u64::from(u32::from(*ip));
        (a, a)
    }));
    occupied.extend(
        usage
            .prefixes
            .iter()
            .chain(&usage.reservations)
            .map(|net| (u64::from(u32::from(net.network())), u64::from(u32::from(net.broadcast())))),
    );

    occupied.retain(|&(start, end)| end >= base && start <= last);
    for range in &mut occupied {
        range.0 = range.0.max(base);
        range.1 = range.1.min(last);
    }
    occupied.sort_unstable();

    let mut used = 0u64;
    let mut touched_prefixes = 0u64;
    let mut last_touched_prefix: Option<u64> = None;
    let mut current: Option<(u64, u64)> = None;
    let mut close = |(start, end): (u64, u64)| {
        used += end - start + 1;
        let first = (start - base) / PREFIX_SIZE;
        let final_ = (end - base) / PREFIX_SIZE;
        let first_new = match last_touched_prefix {
            Some(seen) if seen >= first => seen + 1,
            _ => first,
        };
        if final_ >= first_new {
            touched_prefixes += final_ - first_new + 1;
        }
        last_touched_prefix = Some(last_touched_prefix.map_or(final_, |seen| seen.max(final_)));
    };
    for (start, end) in occupied {
        current = match current {
            Some((s, e)) if start <= e + 1 => Some((s, e.max(end))),
            Some(done) => {
                close(done);
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some(done) = current {
        close(done);
    }

    let total_prefixes = if cidr.prefix_len() <= PREFIX_LEN { size / PREFIX_SIZE } else { 0 };
    SubnetCapacity {
        total_ips: size,
        free_ips: size - used,
        free_prefixes: total_prefixes.saturating_sub(touched_prefixes),
    }
}

/// Capacity summed over the subnets of one availability zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AzCapacity {
    pub subnets: usize,
    pub total_ips: u64,
    pub free_ips: u64,
    pub free_prefixes: u64,
}

impl AzCapacity {
    pub fn add(&mut self, capacity: &SubnetCapacity) {
        self.subnets += 1;
        self.total_ips += capacity.total_ips;
        self.free_ips += capacity.free_ips;
        self.free_prefixes += capacity.free_prefixes;
    }

    pub fn utilisation_percent(&self) -> f64 {
        SubnetCapacity { total_ips: self.total_ips, free_ips: self.free_ips, free_prefixes: self.free_prefixes }
            .utilisation_percent()
    }
}

/// Per-AZ totals, keyed and ordered by AZ name.
pub fn by_az<'a>(subnets: impl IntoIterator<Item = &'a Subnet>) -> BTreeMap<String, AzCapacity> {
    let mut totals: BTreeMap<String, AzCapacity> = BTreeMap::new();
    for subnet in subnets {
        totals.entry(subnet.availability_zone.clone()).or_default().add(&subnet.capacity);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The obvious bitmap answer, to check the interval arithmetic against.
    fn naive(cidr: Ipv4Net, usage: &AddressUsage) -> SubnetCapacity {
        let base = u32::from(cidr.network());
        let size = 1u32 << (32 - cidr.prefix_len());
        let mut used = vec![false; size as usize];
        let mut mark = |a: u32| {
            if a >= base && a - base < size {
                used[(a - base) as usize] = true;
            }
        };
        for a in base..base + 4 {
            mark(a);
        }
        mark(base + size - 1);
        usage.private_ips.iter().for_each(|i| mark(u32::from(*i)));
        for n in usage.prefixes.iter().chain(&usage.reservations) {
            for a in u32::from(n.network())..=u32::from(n.broadcast()) {
                mark(a);
            }
        }
        let free_ips = used.iter().filter(|u| !**u).count() as u64;
        let free_prefixes =
            if cidr.prefix_len() <= 28 { used.chunks(16).filter(|c| c.iter().all(|u| !*u)).count() as u64 } else { 0 };
        SubnetCapacity { total_ips: size as u64, free_ips, free_prefixes }
    }

    #[test]
    fn an_empty_subnet_loses_the_reserved_addresses_and_two_prefixes() {
        let c = subnet_capacity(net("10.0.0.0/24"), &AddressUsage::default());
        assert_eq!(c, SubnetCapacity { total_ips: 256, free_ips: 251, free_prefixes: 14 });
    }

    #[test]
    fn a_single_ip_in_every_prefix_leaves_many_ips_and_no_prefix() {
        // The fragmentation that makes prefix delegation fail.
        let usage = AddressUsage {
            private_ips: (0..16).map(|i| Ipv4Addr::new(10, 0, 0, i * 16 + 7)).collect(),
            ..Default::default()
        };
        let c = subnet_capacity(net("10.0.0.0/24"), &usage);
        assert_eq!(c.free_ips, 256 - 5 - 16);
        assert_eq!(c.free_prefixes, 0);
    }

    #[test]
    fn prefixes_reservations_and_ips_are_counted_once_and_clipped() {
        let usage = AddressUsage {
            private_ips: vec![ip("10.0.0.20"), ip("10.0.0.20"), ip("10.0.9.9")],
            prefixes: vec![net("10.0.0.16/28"), net("10.0.0.32/28")],
            reservations: vec![net("10.0.0.32/27"), net("9.255.254.0/23")],
        };
        let c = subnet_capacity(net("10.0.0.0/24"), &usage);
        assert_eq!(c, naive(net("10.0.0.0/24"), &usage));
        // 5 reserved + 10.0.0.16/28 + 10.0.0.32/27 (the /28 inside it once); .20 and 10.0.9.9 add nothing.
        assert_eq!(c.free_ips, 256 - 5 - 16 - 32);
        assert_eq!(c.free_prefixes, 16 - 1 - 1 - 2 - 1);
        // A reservation larger than the subnet clips to all of it.
        let covering = AddressUsage { reservations: vec![net("10.0.0.0/23")], ..Default::default() };
        assert_eq!(subnet_capacity(net("10.0.0.0/24"), &covering).free_ips, 0);
    }

    #[test]
    fn a_subnet_smaller_than_a_prefix_has_no_prefixes() {
        let c = subnet_capacity(net("10.0.0.0/29"), &AddressUsage::default());
        assert_eq!((c.free_ips, c.free_prefixes), (3, 0));
    }

    #[test]
    fn reported_free_count_caps_ours() {
        let c = subnet_capacity(net("10.0.0.0/24"), &AddressUsage::default()).capped_by_reported_free(Some(40));
        assert_eq!((c.free_ips, c.free_prefixes), (40, 2));
        let c = subnet_capacity(net("10.0.0.0/24"), &AddressUsage::default()).capped_by_reported_free(None);
        assert_eq!(c.free_ips, 251);
    }

    #[test]
    fn utilisation_is_a_percentage() {
        let c = SubnetCapacity { total_ips: 200, free_ips: 50, free_prefixes: 0 };
        assert_eq!(c.utilisation_percent(), 75.0);
    }

    fn usage_in(cidr: Ipv4Net) -> impl Strategy<Value = AddressUsage> {
        let base = u32::from(cidr.network());
        let size = 1u32 << (32 - cidr.prefix_len());
        // Occupants may stray just outside the subnet to exercise clipping.
        let addr = move || (0..size + 64).prop_map(move |o| base.wrapping_sub(32).wrapping_add(o));
        (
            prop::collection::vec(addr(), 0..60),
            prop::collection::vec((addr(), 26u8..=32), 0..12),
            prop::collection::vec((addr(), 24u8..=30), 0..4),
        )
            .prop_map(|(ips, prefixes, reservations)| AddressUsage {
                private_ips: ips.into_iter().map(Ipv4Addr::from).collect(),
                prefixes: prefixes
                    .into_iter()
                    .map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
                    .collect(),
                reservations: reservations
                    .into_iter()
                    .map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn matches_the_bitmap_answer(
            (cidr, usage) in (20u8..=29).prop_flat_map(|len| {
                let cidr = Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), len).unwrap().trunc();
                (Just(cidr), usage_in(cidr))
            })
        ) {
            prop_assert_eq!(subnet_capacity(cidr, &usage), naive(cidr, &usage));
        }
    }
}
