//! A second "host" for the tests: a Linux network namespace joined to this one by a veth pair
//! (`ip netns` + `ip link`, as root), so a process inside reaches this side only over TCP to
//! the host-side address; and a TCP relay that exposes a loopback-only service (PostgreSQL on
//! 127.0.0.1) on that address. Removed on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {} (these tests need root and iproute2)", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

pub struct NetNs {
    pub name: String,
    veth: String,
    /// The address of this side, as the namespace reaches it.
    pub host_ip: String,
    /// The namespace's own address.
    pub ns_ip: String,
}

impl NetNs {
    pub fn new() -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let octet = 1 + u8::from_str_radix(&tag[..2], 16).unwrap() % 250;
        let name = format!("mmtt-{tag}");
        let veth = format!("vm{tag}");
        let peer = format!("vp{tag}");
        let (host_ip, ns_ip) = (format!("10.213.{octet}.1"), format!("10.213.{octet}.2"));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name: name.clone(), veth: veth.clone(), host_ip: host_ip.clone(), ns_ip: ns_ip.clone() };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{ns_ip}/30"), "dev", &peer]);
        ip(&["-n", &name, "link", "set", &peer, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// `program args` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Relays TCP connections from `listen` (ip:0) to `target`; returns the bound port. Runs for the
/// rest of the test process.
pub fn relay(listen_ip: &str, target: &str) -> u16 {
    let l = TcpListener::bind((listen_ip, 0)).expect("bind the relay");
    let port = l.local_addr().unwrap().port();
    let target = target.to_string();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(t) = TcpStream::connect(&target) else { continue };
            let (mut a, mut b) = (c.try_clone().unwrap(), t.try_clone().unwrap());
            let (mut c2, mut t2) = (c, t);
            std::thread::spawn(move || pipe(&mut a, &mut t2));
            std::thread::spawn(move || pipe(&mut b, &mut c2));
        }
    });
    port
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
