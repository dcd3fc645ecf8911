//! The dashboard's files are built into the binary: a file added under
//! src/dashboard/assets must rebuild the crate too (include_dir sees only the files it read).
fn main() {
    println!("cargo:rerun-if-changed=src/dashboard/assets");
}
