//! Worker roles: the five built-in ones and any a user registers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::IdError;

/// The role of a worker agent, such as `researcher` or a user's `translator`.
///
/// A role is 1 to 32 characters: lowercase ASCII letters, digits, `_` and `-`,
/// starting with a letter. Each role has its own bus topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    /// Validates and wraps a role name.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let mut chars = name.chars();
        let ok = name.len() <= 32
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if ok {
            Ok(Self(name))
        } else {
            Err(IdError::new(
                "role",
                &name,
                "use 1 to 32 lowercase ASCII letters, digits, '_' or '-', starting with a letter",
            ))
        }
    }

    /// The role name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The built-in role this is, if it is one.
    pub fn builtin(&self) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|b| b.name() == self.0)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Role {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Role> for String {
    fn from(value: Role) -> Self {
        value.0
    }
}

impl FromStr for Role {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<BuiltinRole> for Role {
    fn from(value: BuiltinRole) -> Self {
        Self(value.name().to_owned())
    }
}

/// The roles Troupe ships a worker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Gathers facts and sources.
    Researcher,
    /// Writes and explains code.
    Coder,
    /// Works with data: numbers, tables, comparisons.
    Analyst,
    /// Writes prose for people.
    Writer,
    /// Checks work for errors, risks and gaps.
    Reviewer,
}

impl BuiltinRole {
    /// Every built-in role, in a stable order.
    pub const ALL: [BuiltinRole; 5] = [
        BuiltinRole::Researcher,
        BuiltinRole::Coder,
        BuiltinRole::Analyst,
        BuiltinRole::Writer,
        BuiltinRole::Reviewer,
    ];

    /// The role's name on the wire and in plans.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Researcher => "researcher",
            BuiltinRole::Coder => "coder",
            BuiltinRole::Analyst => "analyst",
            BuiltinRole::Writer => "writer",
            BuiltinRole::Reviewer => "reviewer",
        }
    }

    /// One line telling the planner what this role is good for.
    pub fn description(self) -> &'static str {
        match self {
            BuiltinRole::Researcher => {
                "gathers facts, background and sources; states what is known and what is uncertain"
            }
            BuiltinRole::Coder => {
                "writes, fixes and explains code; produces complete, runnable code"
            }
            BuiltinRole::Analyst => {
                "analyses data: computes figures, compares, finds trends and explains them"
            }
            BuiltinRole::Writer => {
                "writes clear prose for people: reports, summaries, documentation"
            }
            BuiltinRole::Reviewer => {
                "checks work for errors, security issues, risks and gaps, and says how to fix them"
            }
        }
    }
}

/// A role a worker serves, with the description the planner sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    /// The role.
    pub role: Role,
    /// What the role is good for, in one line.
    pub description: String,
}

impl From<BuiltinRole> for RoleInfo {
    fn from(value: BuiltinRole) -> Self {
        Self {
            role: value.into(),
            description: value.description().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_validated() {
        assert!(Role::new("researcher").is_ok());
        assert!(Role::new("data-viz_2").is_ok());
        assert!(Role::new("Researcher").is_err());
        assert!(Role::new("2d").is_err());
        assert!(Role::new("").is_err());
    }

    #[test]
    fn builtins_round_trip() {
        for b in BuiltinRole::ALL {
            assert_eq!(Role::from(b).builtin(), Some(b));
        }
        assert_eq!(Role::new("translator").unwrap().builtin(), None);
    }
}
