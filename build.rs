//! Compiles the wire protocols in `proto/` (etcd's v3 API, written here with etcd's package, service,
//! message and field names, and cairn's own peer and log-entry formats) into Rust with prost/tonic.

use std::path::{Path, PathBuf};

fn main() {
    if std::env::var_os("PROTOC").is_none() {
        // No system protoc is needed: the vendored one ships inside a crates.io package.
        let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
        std::env::set_var("PROTOC", protoc);
    }
    let root = Path::new("proto");
    let mut files: Vec<PathBuf> = Vec::new();
    collect(root, &mut files);
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let descriptors = out_dir.join("descriptors.bin");
    tonic_build::configure()
        .file_descriptor_set_path(&descriptors)
        .build_server(true)
        .build_client(true)
        // No default stubs: madsim-tonic generates none, so every served method is written out
        // in both builds (unimplemented ones return `Unimplemented` explicitly).
        .generate_default_stubs(false)
        .compile_protos(&files, &[root.to_path_buf()])
        .expect("compile protos");
    // The HTTP/JSON gateway speaks etcd's grpc-gateway JSON: field names as in the .proto,
    // int64 as strings, bytes as base64, enums by name, unknown request fields ignored.
    let descriptor_set = std::fs::read(&descriptors).expect("read descriptor set");
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)
        .expect("register descriptors")
        .out_dir(&out_dir)
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".mvccpb", ".authpb", ".etcdserverpb"])
        .expect("generate serde impls");
    // Integers and bytes are read as etcd's gateway reads them (Go's rules and error messages):
    // see src/proto/gojson.rs.
    for package in ["mvccpb", "authpb", "etcdserverpb"] {
        let path = out_dir.join(format!("{package}.serde.rs"));
        let code = std::fs::read_to_string(&path).expect("read generated serde impls");
        let code = code
            .replace(
                "::pbjson::private::BytesDeserialize",
                "crate::proto::gojson::Bytes",
            )
            .replace(
                "::pbjson::private::NumberDeserialize",
                "crate::proto::gojson::Number",
            );
        let code = go_enum_errors(package, &code);
        std::fs::write(&path, code).expect("write generated serde impls");
    }
}

/// Rewrites the generated enums' "unknown variant" error to jsonpb's `unknown value "X" for enum
/// etcdserverpb.RangeRequest_SortOrder`, naming the enum as Go's generated code does.
fn go_enum_errors(package: &str, code: &str) -> String {
    const IMPL: &str = "impl<'de> serde::Deserialize<'de> for ";
    const UNKNOWN: &str = "serde::de::Error::unknown_variant(value, FIELDS)";
    let mut go_name = String::new();
    let mut out = String::with_capacity(code.len());
    for line in code.lines() {
        if let Some(rust_path) = line.strip_prefix(IMPL).and_then(|r| r.strip_suffix(" {")) {
            // range_request::SortOrder -> RangeRequest_SortOrder
            let segments: Vec<String> = rust_path
                .split("::")
                .map(|segment| {
                    segment
                        .split('_')
                        .map(|word| {
                            let mut chars = word.chars();
                            chars.next().map_or(String::new(), |first| {
                                first.to_ascii_uppercase().to_string() + chars.as_str()
                            })
                        })
                        .collect()
                })
                .collect();
            go_name = format!("{package}.{}", segments.join("_"));
        }
        if line.contains(UNKNOWN) {
            let replacement = format!(
                "serde::de::Error::custom(format!(\"unknown value {{value:?}} for enum {go_name}\"))"
            );
            out.push_str(&line.replace(UNKNOWN, &replacement));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
}
