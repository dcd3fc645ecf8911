//! The in-sandbox agent as a library, so tests can run it on a host socket.

pub mod files;
pub mod fs;
pub mod host_conns;
pub mod identity;
pub mod interpreter;
pub mod process;
pub mod reaper;
pub mod rpc;
pub mod server;
pub mod state;
pub mod tunnel;
pub mod users;
pub mod watch;
