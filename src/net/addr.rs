//! Which IP addresses a tenant-set URL may never reach: everything that is not a globally
//! routed unicast address (loopback, private, link-local, CGNAT, cloud metadata, benchmarking,
//! documentation, reserved, multicast, unspecified), and the IPv6 forms that embed an IPv4
//! address or tunnel to one (IPv4-mapped and -compatible, NAT64, 6to4, Teredo), since those
//! can point anywhere, private networks included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when a tenant-set URL may not reach `ip` (unless the operator allowed it).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v4_forbidden(v),
        IpAddr::V6(v) => v6_forbidden(v),
    }
}

/// `ip` lies in `net/len`.
pub(crate) fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn v4_forbidden(v: Ipv4Addr) -> bool {
    const NETS: &[([u8; 4], u8)] = &[
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0 included
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // CGNAT (100.100.100.200 is a cloud metadata address)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, 169.254.169.254 metadata
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments (192.0.0.192 metadata)
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast included
    ];
    NETS.iter()
        .any(|(n, len)| in_net(IpAddr::V4(v), IpAddr::V4(Ipv4Addr::from(*n)), *len))
}

fn v6_forbidden(v: Ipv6Addr) -> bool {
    const NETS: &[(u128, u8)] = &[
        // ::/96 holds ::, ::1 and the IPv4-compatible addresses; ::ffff:0:0/96 the mapped
        // ones. Both are refused whatever IPv4 address they carry.
        (0, 96),
        (0xffff_0000_0000, 96),
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // NAT64 well-known
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // NAT64 local use
        (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // discard
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // IETF protocol, Teredo included
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16), // 6to4
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // documentation
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // unique local (fd00:ec2::254 metadata)
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // link-local
        (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // site-local (deprecated)
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // multicast
    ];
    NETS.iter()
        .any(|(n, len)| in_net(IpAddr::V6(v), IpAddr::V6(Ipv6Addr::from(*n)), *len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        is_forbidden(s.parse().expect("an IP address"))
    }

    #[test]
    fn every_refused_ipv4_range() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.192",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv4_is_allowed_at_the_range_edges() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(!forbidden(ip), "{ip} is public");
        }
    }

    #[test]
    fn every_refused_ipv6_range() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",      // IPv4-compatible
            "::8.8.8.8",        // compatible, even with a public address
            "::ffff:127.0.0.1", // IPv4-mapped
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::7f00:1", // NAT64 of 127.0.0.1
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",          // Teredo
            "2001:db8::1",      // documentation
            "2002:7f00:1::1",   // 6to4 of 127.0.0.1
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
            "3fff::1",
            "fc00::1",
            "fd00:ec2::254", // AWS metadata over IPv6
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff05::1:3",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv6_is_allowed() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
            "64:ff9a::1",
            "2003::1",
        ] {
            assert!(!forbidden(ip), "{ip} is public");
        }
    }

    #[test]
    fn networks_match_by_prefix() {
        let net: IpAddr = "10.0.0.0".parse().expect("ip");
        assert!(in_net("10.9.8.7".parse().expect("ip"), net, 8));
        assert!(!in_net("11.0.0.0".parse().expect("ip"), net, 8));
        assert!(in_net("11.0.0.0".parse().expect("ip"), net, 0));
        let v6: IpAddr = "fd00::".parse().expect("ip");
        assert!(in_net("fd00::5".parse().expect("ip"), v6, 64));
        assert!(
            !in_net("10.0.0.1".parse().expect("ip"), v6, 0),
            "families differ"
        );
    }
}
