//! Free addresses and free aligned /28 prefixes of a subnet.
//!
//! `AvailableIpAddressCount` counts single free addresses, but the CNI in
//! prefix mode needs 16 contiguous, /28-aligned ones (docs/aws-rules.md,
//! "Prefixes and fragmentation"), so a subnet can show hundreds of free IPs
//! and still fail every prefix request. This module computes both from what
//! occupies the subnet: the five AWS-reserved addresses, ENI private IPs, ENI
//! prefixes and subnet CIDR reservations, each reservation by its type:
//!
//! - `explicit`: AWS never assigns these addresses itself: neither free IPs
//!   nor free prefixes;
//! - `prefix`: AWS keeps these addresses for /28 prefixes. Not free single
//!   IPs, but a free aligned /28 inside one is free prefix capacity: it is
//!   exactly where EC2 places prefixes.
//!
//! It sorts and merges intervals: O(n log n) in the number of occupants,
//! independent of the subnet size.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Addresses the CNI takes at a time in prefix mode.
pub const PREFIX_LEN: u8 = 28;
const PREFIX_SIZE: u64 = 1 << (32 - PREFIX_LEN);

/// The `ReservationType` of a subnet CIDR reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationKind {
    /// Withheld from every automatic assignment.
    Explicit,
    /// Withheld from single IPs, kept for /28 prefixes.
    Prefix,
}

/// One subnet CIDR reservation (GetSubnetCidrReservations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub cidr: Ipv4Net,
    pub kind: ReservationKind,
}

impl Reservation {
    pub fn explicit(cidr: Ipv4Net) -> Self {
        Reservation { cidr, kind: ReservationKind::Explicit }
    }

    pub fn prefix(cidr: Ipv4Net) -> Self {
        Reservation { cidr, kind: ReservationKind::Prefix }
    }
}

/// What occupies a subnet, as read from DescribeNetworkInterfaces and
/// GetSubnetCidrReservations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressUsage {
    pub private_ips: Vec<Ipv4Addr>,
    pub prefixes: Vec<Ipv4Net>,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetCapacity {
    pub total_ips: u64,
    /// Addresses EC2 can hand out one at a time (a node's primary IP, a pod
    /// IP without prefix delegation).
    pub free_ips: u64,
    /// Free aligned /28 blocks, those inside `prefix` reservations included.
    pub free_prefixes: u64,
    /// Free addresses that `prefix` reservations keep for prefixes: not in
    /// `free_ips`, but where `free_prefixes` may lie.
    pub prefix_reserved_free_ips: u64,
}

impl SubnetCapacity {
    /// Share of the subnet not free for single IPs, 0-100.
    pub fn utilisation_percent(&self) -> f64 {
        if self.total_ips == 0 {
            return 100.0;
        }
        100.0 * (self.total_ips - self.free_ips) as f64 / self.total_ips as f64
    }

    /// Trusts the lower of our count and EC2's `AvailableIpAddressCount`:
    /// EC2 also counts occupants we cannot see (other services' ENIs being
    /// created right now), and never-seen space must not be promised.
    ///
    /// Whether EC2 subtracts `prefix` reservations from its count is not
    /// documented, so the reported count caps single IPs only; each free
    /// prefix still needs 16 addresses among those single IPs and the free
    /// space the prefix reservations hold.
    pub fn capped_by_reported_free(mut self, available_ip_address_count: Option<u64>) -> Self {
        if let Some(reported) = available_ip_address_count {
            self.free_ips = self.free_ips.min(reported);
            self.free_prefixes = self.free_prefixes.min((self.free_ips + self.prefix_reserved_free_ips) / PREFIX_SIZE);
        }
        self
    }
}

/// Sorted, merged address ranges of `cidr`, clipped to it.
fn merged(base: u64, last: u64, mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|&(start, end)| end >= base && start <= last);
    for range in &mut ranges {
        range.0 = range.0.max(base);
        range.1 = range.1.min(last);
    }
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some((_, e)) if start <= *e + 1 => *e = (*e).max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Addresses in merged ranges, and the /28 blocks (counted from `base`) they touch.
fn addresses_and_touched_prefixes(base: u64, ranges: &[(u64, u64)]) -> (u64, u64) {
    let mut used = 0u64;
    let mut touched = 0u64;
    let mut last_touched: Option<u64> = None;
    for &(start, end) in ranges {
        used += end - start + 1;
        let first = (start - base) / PREFIX_SIZE;
        let final_ = (end - base) / PREFIX_SIZE;
        let first_new = match last_touched {
            Some(seen) if seen >= first => seen + 1,
            _ => first,
        };
        if final_ >= first_new {
            touched += final_ - first_new + 1;
        }
        last_touched = Some(last_touched.map_or(final_, |seen| seen.max(final_)));
    }
    (used, touched)
}

fn range_of(net: &Ipv4Net) -> (u64, u64) {
    (u64::from(u32::from(net.network())), u64::from(u32::from(net.broadcast())))
}

/// Capacity of `cidr` given what occupies it. Occupants outside the subnet
/// are ignored; overlapping occupants are counted once.
pub fn subnet_capacity(cidr: Ipv4Net, usage: &AddressUsage) -> SubnetCapacity {
    let base = u64::from(u32::from(cidr.network()));
    let size = 1u64 << (32 - cidr.prefix_len());
    let last = base + size - 1;

    // What no prefix can use: AWS's five addresses (the network address, the
    // next three, the last one), ENI IPs and prefixes, explicit reservations.
    let mut blocked: Vec<(u64, u64)> =
        Vec::with_capacity(2 + usage.private_ips.len() + usage.prefixes.len() + usage.reservations.len());
    blocked.push((base, (base + 3).min(last)));
    blocked.push((last, last));
    blocked.extend(usage.private_ips.iter().map(|ip| {
        let a = u64::from(u32::from(*ip));
        (a, a)
    }));
    blocked.extend(usage.prefixes.iter().map(range_of));
    blocked
        .extend(usage.reservations.iter().filter(|r| r.kind == ReservationKind::Explicit).map(|r| range_of(&r.cidr)));
    let blocked = merged(base, last, blocked);
    let (blocked_addresses, touched_prefixes) = addresses_and_touched_prefixes(base, &blocked);

    // Single IPs are also kept out of prefix reservations. Most subnets have
    // none, so the blocked ranges are reused rather than sorted again; where
    // there are some, they are merged into the already merged (short) list.
    let mut prefix_reserved =
        usage.reservations.iter().filter(|r| r.kind == ReservationKind::Prefix).map(|r| range_of(&r.cidr)).peekable();
    let not_single_addresses = if prefix_reserved.peek().is_none() {
        blocked_addresses
    } else {
        let not_single = merged(base, last, blocked.iter().copied().chain(prefix_reserved).collect());
        addresses_and_touched_prefixes(base, &not_single).0
    };

    let total_prefixes = if cidr.prefix_len() <= PREFIX_LEN { size / PREFIX_SIZE } else { 0 };
    SubnetCapacity {
        total_ips: size,
        free_ips: size - not_single_addresses,
        free_prefixes: total_prefixes.saturating_sub(touched_prefixes),
        prefix_reserved_free_ips: not_single_addresses - blocked_addresses,
    }
}

/// Capacity summed over the subnets of one availability zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzCapacity {
    /// The subnets counted, in the order given.
    pub subnet_ids: Vec<String>,
    pub total_ips: u64,
    pub free_ips: u64,
    pub free_prefixes: u64,
    pub prefix_reserved_free_ips: u64,
}

impl AzCapacity {
    pub fn add(&mut self, subnet_id: &str, capacity: &SubnetCapacity) {
        self.subnet_ids.push(subnet_id.to_string());
        self.total_ips += capacity.total_ips;
        self.free_ips += capacity.free_ips;
        self.free_prefixes += capacity.free_prefixes;
        self.prefix_reserved_free_ips += capacity.prefix_reserved_free_ips;
    }

    pub fn utilisation_percent(&self) -> f64 {
        SubnetCapacity {
            total_ips: self.total_ips,
            free_ips: self.free_ips,
            free_prefixes: self.free_prefixes,
            prefix_reserved_free_ips: self.prefix_reserved_free_ips,
        }
        .utilisation_percent()
    }
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

    /// The obvious bitmap answer, to check the interval arithmetic against:
    /// one flag per address for "no single IP here" and one for "no prefix here".
    fn naive(cidr: Ipv4Net, usage: &AddressUsage) -> SubnetCapacity {
        let base = u32::from(cidr.network());
        let size = 1u32 << (32 - cidr.prefix_len());
        let mut not_single = vec![false; size as usize];
        let mut blocked = vec![false; size as usize];
        let mut mark = |a: u32, prefix_too: bool| {
            if a >= base && a - base < size {
                not_single[(a - base) as usize] = true;
                if prefix_too {
                    blocked[(a - base) as usize] = true;
                }
            }
        };
        for a in (base..base + 4).chain([base + size - 1]) {
            mark(a, true);
        }
        usage.private_ips.iter().for_each(|i| mark(u32::from(*i), true));
        let spans = usage
            .prefixes
            .iter()
            .map(|n| (n, true))
            .chain(usage.reservations.iter().map(|r| (&r.cidr, r.kind == ReservationKind::Explicit)));
        for (n, prefix_too) in spans {
            for a in u32::from(n.network())..=u32::from(n.broadcast()) {
                mark(a, prefix_too);
            }
        }
        let count = |flags: &[bool]| flags.iter().filter(|f| **f).count() as u64;
        let free_prefixes = if cidr.prefix_len() <= 28 {
            blocked.chunks(16).filter(|c| c.iter().all(|b| !*b)).count() as u64
        } else {
            0
        };
        SubnetCapacity {
            total_ips: size as u64,
            free_ips: size as u64 - count(&not_single),
            free_prefixes,
            prefix_reserved_free_ips: count(&not_single) - count(&blocked),
        }
    }

    #[test]
    fn an_empty_subnet_loses_the_reserved_addresses_and_two_prefixes() {
        let c = subnet_capacity(net("10.0.0.0/24"), &AddressUsage::default());
        assert_eq!(c, SubnetCapacity { total_ips: 256, free_ips: 251, free_prefixes: 14, prefix_reserved_free_ips: 0 });
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
    fn prefixes_explicit_reservations_and_ips_are_counted_once_and_clipped() {
        let usage = AddressUsage {
            private_ips: vec![ip("10.0.0.20"), ip("10.0.0.20"), ip("10.0.9.9")],
            prefixes: vec![net("10.0.0.16/28"), net("10.0.0.32/28")],
            reservations: vec![
                Reservation::explicit(net("10.0.0.32/27")),
                Reservation::explicit(net("9.255.254.0/23")),
            ],
        };
        let c = subnet_capacity(net("10.0.0.0/24"), &usage);
        assert_eq!(c, naive(net("10.0.0.0/24"), &usage));
        // 5 reserved + 10.0.0.16/28 + 10.0.0.32/27 (the /28 inside it once); .20 and 10.0.9.9 add nothing.
        assert_eq!(c.free_ips, 256 - 5 - 16 - 32);
        assert_eq!(c.free_prefixes, 16 - 1 - 1 - 2 - 1);
        // A reservation larger than the subnet clips to all of it.
        let covering =
            AddressUsage { reservations: vec![Reservation::explicit(net("10.0.0.0/23"))], ..Default::default() };
        let c = subnet_capacity(net("10.0.0.0/24"), &covering);
        assert_eq!((c.free_ips, c.free_prefixes), (0, 0));
    }

    #[test]
    fn an_explicit_reservation_is_neither_free_ips_nor_free_prefixes() {
        let usage =
            AddressUsage { reservations: vec![Reservation::explicit(net("10.0.0.64/26"))], ..Default::default() };
        let c = subnet_capacity(net("10.0.0.0/24"), &usage);
        assert_eq!((c.free_ips, c.free_prefixes, c.prefix_reserved_free_ips), (251 - 64, 14 - 4, 0));
    }

    #[test]
    fn a_prefix_reservation_is_free_prefix_capacity_and_never_free_ips() {
        // An empty prefix reservation of four /28s: no single IP, four prefixes.
        let empty = AddressUsage { reservations: vec![Reservation::prefix(net("10.0.0.64/26"))], ..Default::default() };
        let c = subnet_capacity(net("10.0.0.0/24"), &empty);
        assert_eq!((c.free_ips, c.free_prefixes, c.prefix_reserved_free_ips), (251 - 64, 14, 64));
        // A prefix EC2 placed inside it, and a stray IP, take what they occupy.
        let used = AddressUsage {
            private_ips: vec![ip("10.0.0.100")],
            prefixes: vec![net("10.0.0.64/28")],
            reservations: vec![Reservation::prefix(net("10.0.0.64/26"))],
        };
        let c = subnet_capacity(net("10.0.0.0/24"), &used);
        assert_eq!((c.free_ips, c.free_prefixes, c.prefix_reserved_free_ips), (251 - 64, 12, 64 - 16 - 1));
        // Explicit wins where both types cover an address.
        let both = AddressUsage {
            reservations: vec![Reservation::prefix(net("10.0.0.64/26")), Reservation::explicit(net("10.0.0.96/27"))],
            ..Default::default()
        };
        let c = subnet_capacity(net("10.0.0.0/24"), &both);
        assert_eq!((c.free_ips, c.free_prefixes, c.prefix_reserved_free_ips), (251 - 64, 12, 32));
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
        // Space held by a prefix reservation still counts towards prefixes:
        // 40 reported single IPs + 64 reserved for prefixes hold 6 prefixes at most.
        let reserved =
            AddressUsage { reservations: vec![Reservation::prefix(net("10.0.0.64/26"))], ..Default::default() };
        let c = subnet_capacity(net("10.0.0.0/24"), &reserved).capped_by_reported_free(Some(40));
        assert_eq!((c.free_ips, c.free_prefixes), (40, 6));
    }

    #[test]
    fn utilisation_is_a_percentage() {
        let c = SubnetCapacity { total_ips: 200, free_ips: 50, free_prefixes: 0, prefix_reserved_free_ips: 0 };
        assert_eq!(c.utilisation_percent(), 75.0);
    }

    fn usage_in(cidr: Ipv4Net) -> impl Strategy<Value = AddressUsage> {
        let base = u32::from(cidr.network());
        let size = 1u32 << (32 - cidr.prefix_len());
        // Occupants may stray just outside the subnet to exercise clipping.
        let addr = move || (0..size + 64).prop_map(move |o| base.wrapping_sub(32).wrapping_add(o));
        let net = |(a, l): (u32, u8)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc();
        (
            prop::collection::vec(addr(), 0..60),
            prop::collection::vec((addr(), 26u8..=32), 0..12),
            prop::collection::vec((addr(), 24u8..=30, any::<bool>()), 0..6),
        )
            .prop_map(move |(ips, prefixes, reservations)| AddressUsage {
                private_ips: ips.into_iter().map(Ipv4Addr::from).collect(),
                prefixes: prefixes.into_iter().map(net).collect(),
                reservations: reservations
                    .into_iter()
                    .map(|(a, l, explicit)| {
                        let cidr = net((a, l));
                        if explicit { Reservation::explicit(cidr) } else { Reservation::prefix(cidr) }
                    })
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

        /// Whatever the reported count, the cap never promises more than was
        /// computed, and every prefix it keeps has 16 addresses behind it.
        #[test]
        fn the_reported_count_only_lowers_capacity(
            (cidr, usage) in (20u8..=28).prop_flat_map(|len| {
                let cidr = Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), len).unwrap().trunc();
                (Just(cidr), usage_in(cidr))
            }),
            reported in 0u64..5000,
        ) {
            let computed = subnet_capacity(cidr, &usage);
            let capped = computed.capped_by_reported_free(Some(reported));
            prop_assert!(capped.free_ips <= computed.free_ips.min(reported));
            prop_assert!(capped.free_prefixes <= computed.free_prefixes);
            prop_assert!(capped.free_prefixes * 16 <= capped.free_ips + capped.prefix_reserved_free_ips);
        }
    }
}
