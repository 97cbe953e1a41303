//! Roles, permissions, and how roles grant permissions.

use std::collections::{BTreeMap, BTreeSet};

/// Configuration mapping each role to the permissions it grants.
#[derive(Debug, Clone, Default)]
pub struct RolePermissions {
    grants: BTreeMap<String, BTreeSet<String>>,
}

impl RolePermissions {
    /// Builds the mapping from `(role, permissions)` pairs.
    pub fn new<I, P>(grants: I) -> RolePermissions
    where
        I: IntoIterator<Item = (String, P)>,
        P: IntoIterator<Item = String>,
    {
        RolePermissions {
            grants: grants
                .into_iter()
                .map(|(role, perms)| (role, perms.into_iter().collect()))
                .collect(),
        }
    }

    /// A user's effective permissions: those granted directly plus those of every role, sorted
    /// and without repeats.
    pub fn effective(&self, roles: &[String], direct: &[String]) -> Vec<String> {
        let mut all: BTreeSet<&str> = direct.iter().map(String::as_str).collect();
        for role in roles {
            if let Some(perms) = self.grants.get(role) {
                all.extend(perms.iter().map(String::as_str));
            }
        }
        all.into_iter().map(str::to_owned).collect()
    }
}

/// What a request demands of its session (from `?role=`/`?permission=`/`?aal=`/`?max_age=`
/// or an access rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// Roles that must all be held.
    pub roles: Vec<String>,
    /// Permissions that must all be held.
    pub permissions: Vec<String>,
    /// How strongly and how recently the user must have signed in.
    pub assurance: crate::assurance::Requirement,
}

impl Requirement {
    /// True when `roles` and `permissions` cover everything required.
    pub fn is_met_by(&self, roles: &[String], permissions: &[String]) -> bool {
        self.roles.iter().all(|r| roles.contains(r))
            && self.permissions.iter().all(|p| permissions.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_permissions() {
        let map = RolePermissions::new([(
            "editor".to_string(),
            vec!["write".to_string(), "read".to_string()],
        )]);
        let perms = map.effective(
            &["editor".into(), "ghost".into()],
            &["read".into(), "admin:keys".into()],
        );
        assert_eq!(perms, vec!["admin:keys", "read", "write"]);
    }

    #[test]
    fn requirements_need_everything() {
        let req = Requirement {
            roles: vec!["a".into()],
            permissions: vec!["p".into()],
            ..Requirement::default()
        };
        assert!(req.is_met_by(&["a".into()], &["p".into(), "q".into()]));
        assert!(!req.is_met_by(&["b".into()], &["p".into()]));
        assert!(!req.is_met_by(&["a".into()], &[]));
        assert!(Requirement::default().is_met_by(&[], &[]));
    }
}
