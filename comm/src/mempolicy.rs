//! The NUMA policy of shared segments (`--mempolicy`): a value type the
//! configuration, the control segment and the `mbind` call share.
#![forbid(unsafe_code)]

use cobre_shm_layout::MemPolicyCode;

/// NUMA policy for the pages of shared regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemPolicy {
    /// Pages land on the node of the rank that first writes them.
    #[default]
    FirstTouch,
    /// Pages are interleaved over all nodes that have memory.
    Interleave,
    /// Pages are bound to node `K`.
    Node(u32),
}

impl MemPolicy {
    /// Parse `first-touch`, `interleave` or `node:K`.
    ///
    /// # Errors
    /// A message naming the accepted spellings.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "first-touch" => Ok(Self::FirstTouch),
            "interleave" => Ok(Self::Interleave),
            other => other
                .strip_prefix("node:")
                .and_then(|k| k.parse::<u32>().ok())
                .map(Self::Node)
                .ok_or_else(|| {
                    format!("memory policy '{other}' is not one of first-touch, interleave, node:K")
                }),
        }
    }

    /// Encode for the control segment.
    #[must_use]
    pub fn code(self) -> (MemPolicyCode, u32) {
        match self {
            Self::FirstTouch => (MemPolicyCode::FirstTouch, 0),
            Self::Interleave => (MemPolicyCode::Interleave, 0),
            Self::Node(k) => (MemPolicyCode::Node, k),
        }
    }

    /// Decode from the control segment.
    #[must_use]
    pub fn from_code(code: u32, node: u32) -> Option<Self> {
        match MemPolicyCode::from_u32(code)? {
            MemPolicyCode::FirstTouch => Some(Self::FirstTouch),
            MemPolicyCode::Interleave => Some(Self::Interleave),
            MemPolicyCode::Node => Some(Self::Node(node)),
        }
    }
}

impl std::fmt::Display for MemPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstTouch => f.write_str("first-touch"),
            Self::Interleave => f.write_str("interleave"),
            Self::Node(k) => write!(f, "node:{k}"),
        }
    }
}
