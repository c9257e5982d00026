//! Who listens on a loopback TCP address, from the kernel's socket tables
//! (`/proc/net/tcp`, `/proc/net/tcp6`: the uid column is the socket's
//! owner).
//!
//! A plain-http loopback endpoint is only the admin's while the admin's
//! service holds its port: any local account may listen on a free port
//! above 1023 (a model server that is down, or not yet started, leaves its
//! port free). So before a host key is sent there, the listeners that
//! would take the connection are looked up and must all belong to root or
//! to the account the admin named. The kernel keeps one owner per port:
//! binding a port that another uid listens on fails, `SO_REUSEPORT`
//! included, so the check stands until that listener closes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in the tables.
const LISTEN: &str = "0A";

/// The uids of the sockets listening where a connection to `addr` would
/// go: on its address, on the wildcard address, or (for IPv4) on the IPv6
/// wildcard or mapped address of a dual-stack socket.
pub fn holders(addr: SocketAddr) -> Result<Vec<u32>, String> {
    let mut uids = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel: no table, no listener there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {table}: {e}")),
        };
        for line in text.lines().skip(1) {
            if let Some((local, uid)) = listening(line)
                && local.port() == addr.port()
                && takes(local.ip(), addr.ip())
            {
                uids.push(uid);
            }
        }
    }
    Ok(uids)
}

/// The local address and owner of a table line in the listening state.
fn listening(line: &str) -> Option<(SocketAddr, u32)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid …
    let (local, state, uid) = (fields.get(1)?, fields.get(3)?, fields.get(7)?);
    if *state != LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((SocketAddr::new(ip_of(ip)?, port), uid.parse().ok()?))
}

/// An address as the tables print it: each 32-bit word in hex, in the
/// host's byte order.
fn ip_of(hex: &str) -> Option<IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for i in (0..hex.len()).step_by(8) {
        let word = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Whether a socket bound to `local` accepts a connection to `target`.
fn takes(local: IpAddr, target: IpAddr) -> bool {
    local == target
        || local.is_unspecified()
        || matches!((local, target), (IpAddr::V6(l), IpAddr::V4(t)) if l == t.to_ipv6_mapped())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_parse_and_match_as_the_kernel_routes() {
        // 127.0.0.1:2024 listening, uid 1001 (as printed on little-endian).
        let v4 = "   0: 0100007F:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 1257 1";
        let expected = if cfg!(target_endian = "little") {
            Some(("127.0.0.1:2024".parse().ok(), 1001))
        } else {
            None
        };
        if let Some((addr, uid)) = expected {
            assert_eq!(listening(v4), addr.map(|a| (a, uid)));
        }
        // Not listening: ignored.
        assert_eq!(listening(&v4.replace(" 0A ", " 01 ")), None);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(takes(IpAddr::V4(Ipv4Addr::UNSPECIFIED), lo));
        assert!(takes(IpAddr::V6(Ipv6Addr::UNSPECIFIED), lo));
        assert!(takes(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), lo));
        assert!(!takes(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), lo));
        assert!(!takes(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        ));
    }

    #[test]
    fn a_socket_of_this_process_is_found_with_its_owner() -> std::io::Result<()> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(holders(addr).ok(), Some(vec![me]));
        drop(l);
        assert_eq!(holders(addr).ok(), Some(vec![]));
        Ok(())
    }
}
