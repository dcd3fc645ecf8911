//! Pulling OCI and Docker images from a registry into the layer store.
//!
//! [`pull`] resolves a reference (Docker's short names included) to an image manifest — from
//! an image index or manifest list it takes the linux/amd64 image — and turns each image layer
//! into a store layer whose id is derived from its parent and the layer's digest, so a layer
//! already in the store on the same parent is neither downloaded nor unpacked again. Blobs
//! stream to a file in the store's directory while their digest is checked, and are unpacked
//! (OCI whiteouts become overlayfs's) only once they verify. The registry protocol, token
//! authentication included, is `oci-client`'s.

pub mod config;
mod error;
mod pull;
pub mod reference;

pub use config::ImageConfig;
pub use error::ImageError;
pub use pull::{pull, PullOptions, PulledImage};
