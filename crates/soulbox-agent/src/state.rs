//! Agent-wide state shared by every handler.

use crate::process::ProcessTable;
use crate::users::{self, User};
use crate::watch::Watchers;
use soulbox_protocol::connect::{Code, ConnectError};
use soulbox_protocol::init::InitSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct Agent(pub Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub init: RwLock<InitSpec>,
    /// Bumped whenever `/init` replaces the env vars, so running kernels can catch up.
    pub env_generation: AtomicU64,
    pub processes: Arc<ProcessTable>,
    pub watchers: Watchers,
    pub contexts: crate::interpreter::Contexts,
    pub host_conns: crate::host_conns::HostConns,
}

impl std::ops::Deref for Agent {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Agent {
    pub fn new(init: InitSpec) -> Self {
        Agent(Arc::new(Inner {
            init: RwLock::new(init),
            env_generation: AtomicU64::new(0),
            processes: Arc::default(),
            watchers: Watchers::default(),
            host_conns: Default::default(),
            contexts: Default::default(),
        }))
    }

    pub fn init(&self) -> InitSpec {
        self.init.read().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn env_generation(&self) -> u64 {
        self.env_generation.load(Ordering::SeqCst)
    }

    pub fn token(&self) -> Option<String> {
        self.init().access_token
    }

    /// The user a request acts as: the one it names, else the sandbox default (`user` if it
    /// exists, else `root`). An unknown name is an `unauthenticated` error, as in envd.
    pub fn user(&self, requested: Option<&str>) -> Result<User, ConnectError> {
        let name = match requested.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match self.init().default_user {
                Some(u) => u,
                None if users::lookup("user").is_some() => "user".into(),
                None => "root".into(),
            },
        };
        users::lookup(&name).ok_or_else(|| {
            ConnectError::new(Code::Unauthenticated, format!("invalid username: '{name}'"))
        })
    }
}
