//! Compiles metcd's own .proto files (proto/): etcd's Lock and Election
//! services, which the `etcd-client` crate generates for its clients but
//! does not export for servers. Needs `protoc` (Debian's
//! protobuf-compiler, installed by `just setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(
            &["proto/v3lock.proto", "proto/v3election.proto"],
            &["proto"],
        )?;
    Ok(())
}
