//! # TLS for the client and peer ports, with etcd's flags
//!
//! What this module owns: reading PEM files named by etcd's flags into rustls configurations
//! (server side: [`server`]; dialling side: [`client`]), the self-signed certificates of
//! `--auto-tls` / `--peer-auto-tls`, and the listener that serves plain and TLS connections on
//! one port ([`accept`]). It is production I/O only: the simulator's members talk plaintext over
//! madsim's network, so nothing here is compiled under `cfg(madsim)`.

pub mod client;
