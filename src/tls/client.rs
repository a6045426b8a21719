//! The dialling side of TLS: rustls client configurations from etcdctl's and etcd's flags, and a
//! connector that gives tonic a TLS channel to an `https://` endpoint.
