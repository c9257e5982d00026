//! Who is at the other end of a login: the "client" that failed logins
//! are counted against (rule 6).
//!
//! The TCP listener is loopback only, so every client has the same address
//! (and any account can pick another one of 127.0.0.0/8): an address tells
//! nothing about who is guessing. The kernel does know: both ends of a
//! loopback connection are sockets of this host, and its socket table
//! (`/proc/self/net/tcp`, `tcp6`) names the account that owns the client's
//! end. That account is the client. Where the table does not say (the
//! client already closed its end, or two sockets match), the client is
//! its address, a bucket every such connection shares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::accounts::UserId;

/// A login's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// The account that owns the connecting socket: the Unix socket's peer,
    /// or the owner of a loopback TCP client's socket.
    Account(UserId),
    /// A TCP client whose socket's owner could not be found.
    Address(IpAddr),
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Account(uid) => write!(f, "uid {uid}"),
            Client::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// TCP state `TIME_WAIT` in the kernel's table: such an entry has no owner.
const TIME_WAIT: u8 = 0x06;

/// The client of a TCP connection from `peer` to our listener on `port`.
/// Reads the kernel's socket table: call it off the async threads.
pub fn of_tcp(peer: SocketAddr, port: u16) -> Client {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/self/net/tcp",
        SocketAddr::V6(_) => "/proc/self/net/tcp6",
    };
    std::fs::read_to_string(table)
        .ok()
        .and_then(|text| owner_in(&text, peer, port))
        .map_or(Client::Address(peer.ip()), Client::Account)
}

/// The owner of the one socket in `table` whose local end is `peer` and
/// whose remote end is a loopback address with `port`; `None` when there
/// is none, or several with different owners.
fn owner_in(table: &str, peer: SocketAddr, port: u16) -> Option<UserId> {
    let mut owners = table
        .lines()
        .skip(1)
        .filter_map(Entry::parse)
        .filter(|e| {
            e.state != TIME_WAIT
                && e.local == peer
                && e.remote.port() == port
                && e.remote.ip().is_loopback()
        })
        .map(|e| e.uid);
    let first = owners.next()?;
    owners.all(|uid| uid == first).then_some(UserId(first))
}

/// One line of the table: `sl local remote st queues timers retrnsmt uid …`.
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    uid: u32,
}

impl Entry {
    fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.split_whitespace();
        let _slot = fields.next()?;
        let local = address(fields.next()?)?;
        let remote = address(fields.next()?)?;
        let state = u8::from_str_radix(fields.next()?, 16).ok()?;
        let uid = fields.nth(3)?.parse().ok()?;
        Some(Entry {
            local,
            remote,
            state,
            uid,
        })
    }
}

/// `0100007F:1F40`: the address as the kernel stores it, printed as 32-bit
/// words in the host's byte order, and the port in hex.
fn address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = std::str::from_utf8(word).ok()?;
        bytes.extend_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hex the kernel prints for `ip` (its bytes as native words).
    fn hex(ip: IpAddr) -> String {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        bytes
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    }

    fn line(local: SocketAddr, remote: SocketAddr, state: u8, uid: u32) -> String {
        format!(
            "   1: {}:{:04X} {}:{:04X} {state:02X} 00000000:00000000 00:00000000 00000000  {uid}        0 4242 1 0000000000000000 20 4 30 10 -1",
            hex(local.ip()),
            local.port(),
            hex(remote.ip()),
            remote.port()
        )
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    #[test]
    fn the_owner_of_the_client_end_is_found() {
        let server: SocketAddr = "127.0.0.1:7733".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        let other: SocketAddr = "127.0.0.1:50001".parse().expect("addr");
        let table = [
            HEADER.to_owned(),
            line(server, "0.0.0.0:0".parse().expect("addr"), 0x0A, 0),
            // The server's end of the connection: root's.
            line(server, client, 0x01, 0),
            line(client, server, 0x01, 1001),
            line(other, server, 0x01, 1002),
        ]
        .join("\n");
        assert_eq!(owner_in(&table, client, 7733), Some(UserId(1001)));
        assert_eq!(owner_in(&table, other, 7733), Some(UserId(1002)));
        // Another port is another listener's connection.
        assert_eq!(owner_in(&table, client, 7734), None);
    }

    #[test]
    fn ipv6_addresses_parse() {
        let server: SocketAddr = "[::1]:7733".parse().expect("addr");
        let client: SocketAddr = "[::1]:40000".parse().expect("addr");
        let table = [HEADER.to_owned(), line(client, server, 0x01, 1003)].join("\n");
        assert_eq!(owner_in(&table, client, 7733), Some(UserId(1003)));
    }

    #[test]
    fn ambiguous_or_ownerless_entries_name_nobody() {
        let server: SocketAddr = "127.0.0.1:7733".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        let two = [
            HEADER.to_owned(),
            line(client, server, 0x01, 1001),
            line(client, server, 0x01, 1002),
        ]
        .join("\n");
        assert_eq!(owner_in(&two, client, 7733), None);
        let waiting = [HEADER.to_owned(), line(client, server, TIME_WAIT, 0)].join("\n");
        assert_eq!(owner_in(&waiting, client, 7733), None);
        assert_eq!(owner_in("garbage\n1: zz", client, 7733), None);
    }
}
