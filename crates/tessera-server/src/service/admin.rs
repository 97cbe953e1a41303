//! Administration: users, sessions and keys, shared by the admin API and the command line.
//! Every change is audited with the acting [`Actor`].

use tessera_core::ids::SessionId;
use tessera_core::keys::KeyRecord;
use tessera_core::random;
use tessera_store::{Session, StoreError, User};

use super::audit::{Actor, Details, EventKind};
use super::{ServiceError, Tessera, check_authz_names, check_new_password, dedup, names};

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New directly granted permissions.
    pub permissions: Option<Vec<String>>,
    /// Disable (true) or enable (false).
    pub disabled: Option<bool>,
    /// New password.
    pub password: Option<String>,
}

impl Tessera {
    /// Creates a user.
    pub async fn create_user(
        &self,
        ctx: &Actor,
        username: &str,
        password: &str,
        roles: Vec<String>,
        permissions: Vec<String>,
    ) -> Result<User, ServiceError> {
        let username = &names::new_username(username)?;
        check_new_password(password)?;
        check_authz_names(&roles, &permissions)?;
        let user = User {
            id: random::id()?.into(),
            username: username.to_owned(),
            password_hash: self.hash_password(password).await?,
            roles: dedup(roles),
            permissions: dedup(permissions),
            disabled: false,
            created_at: self.now(),
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict => {
                ServiceError::Conflict(format!("user {username:?} already exists"))
            }
            other => other.into(),
        })?;
        let detail = Some(format!("roles={}", user.roles.join(",")));
        self.audit(
            EventKind::UserCreated,
            ctx,
            Details::about(username, detail),
        )
        .await;
        Ok(user)
    }

    /// The user with this name (in its NFC form, as names are stored), or `NotFound`.
    /// No other rule applies here, so a name stored before the rules can still be removed.
    pub async fn user(&self, username: &str) -> Result<User, ServiceError> {
        self.store
            .user_by_name(&names::nfc(username))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no user {username:?}")))
    }

    /// All users, ordered by username.
    pub async fn users(&self) -> Result<Vec<User>, ServiceError> {
        Ok(self.store.list_users().await?)
    }

    /// Deletes a user and all their sessions.
    pub async fn remove_user(&self, ctx: &Actor, username: &str) -> Result<(), ServiceError> {
        let user = self.user(username).await?;
        // Revoked (and logged for the revocation feed) before the sessions are deleted.
        self.revoke_user_logged(&user.id, None).await?;
        self.store.delete_user(&user.id).await?;
        let username = user.username.as_str();
        self.audit(EventKind::UserDeleted, ctx, Details::about(username, None))
            .await;
        Ok(())
    }

    /// Applies `patch` to a user. Any change to what a token says or allows (roles,
    /// permissions, disabled, password) revokes all the user's sessions at once, so no live
    /// token keeps the old state.
    pub async fn update_user(
        &self,
        ctx: &Actor,
        username: &str,
        patch: UserPatch,
    ) -> Result<User, ServiceError> {
        check_authz_names(
            patch.roles.as_deref().unwrap_or_default(),
            patch.permissions.as_deref().unwrap_or_default(),
        )?;
        let mut user = self.user(username).await?;
        let username = &user.username.clone();
        if let Some(password) = &patch.password {
            check_new_password(password)?;
            user.password_hash = self.hash_password(password).await?;
        }
        if let Some(roles) = patch.roles.clone() {
            user.roles = dedup(roles);
        }
        if let Some(permissions) = patch.permissions.clone() {
            user.permissions = dedup(permissions);
        }
        if let Some(disabled) = patch.disabled {
            user.disabled = disabled;
        }
        // Revoked before and after the change: sessions on Redis carry a snapshot of the user
        // (see `tessera_store::SessionStore`), so if the revocation after the change failed,
        // only a session started in between could keep the old state, not every session.
        let before = self.revoke_user_logged(&user.id, None).await?;
        if !self.store.update_user(&user).await? {
            return Err(ServiceError::NotFound(format!("no user {username:?}")));
        }
        let revoked = before + self.revoke_user_logged(&user.id, None).await?;
        if patch.roles.is_some() || patch.permissions.is_some() {
            let detail = Some(format!(
                "roles={} permissions={}; {revoked} session(s) revoked",
                user.roles.join(","),
                user.permissions.join(",")
            ));
            self.audit(
                EventKind::UserUpdated,
                ctx,
                Details::about(username, detail),
            )
            .await;
        }
        if let Some(disabled) = patch.disabled {
            let detail = Some(if disabled {
                "disabled".to_owned()
            } else {
                "enabled".to_owned()
            });
            self.audit(
                EventKind::UserDisabled,
                ctx,
                Details::about(username, detail),
            )
            .await;
        }
        if patch.password.is_some() {
            let detail = Some("reset by an administrator".to_owned());
            self.audit(
                EventKind::PasswordChanged,
                ctx,
                Details::about(username, detail),
            )
            .await;
        }
        Ok(user)
    }

    /// Sets a user's password and revokes all their sessions.
    pub async fn set_password(
        &self,
        ctx: &Actor,
        username: &str,
        password: &str,
    ) -> Result<(), ServiceError> {
        let patch = UserPatch {
            password: Some(password.to_owned()),
            ..UserPatch::default()
        };
        self.update_user(ctx, username, patch).await.map(drop)
    }

    /// Replaces a user's roles and revokes all their sessions, so no token carries the old ones.
    pub async fn set_roles(
        &self,
        ctx: &Actor,
        username: &str,
        roles: Vec<String>,
    ) -> Result<User, ServiceError> {
        self.update_user(
            ctx,
            username,
            UserPatch {
                roles: Some(roles),
                ..UserPatch::default()
            },
        )
        .await
    }

    /// Live sessions of one user (by name) or of everyone.
    pub async fn list_sessions(
        &self,
        username: Option<&str>,
    ) -> Result<Vec<Session>, ServiceError> {
        let user_id = match username {
            Some(name) => Some(self.user(name).await?.id),
            None => None,
        };
        Ok(self
            .store
            .list_sessions(user_id.as_ref(), self.now())
            .await?)
    }

    /// Revokes a session by id; `NotFound` when it does not exist or was already revoked.
    pub async fn revoke_session(&self, ctx: &Actor, id: &str) -> Result<(), ServiceError> {
        let not_found = || ServiceError::NotFound(format!("no live session {id:?}"));
        if id.len() > 64 {
            return Err(not_found());
        }
        let session_id = SessionId::from(id);
        let record = self
            .store
            .session_by_id(&session_id)
            .await?
            .ok_or_else(not_found)?;
        if !self.revoke_logged(&session_id).await? {
            return Err(not_found());
        }
        self.audit_revocation(ctx, &record.user.username, id).await;
        Ok(())
    }

    /// Revokes every session of a user. Returns how many.
    pub async fn revoke_user(&self, ctx: &Actor, username: &str) -> Result<u64, ServiceError> {
        let user = self.user(username).await?;
        let username = user.username.as_str();
        let count = self.revoke_user_logged(&user.id, None).await?;
        let detail = Some(format!("all {count} session(s)"));
        self.audit(
            EventKind::SessionRevoked,
            ctx,
            Details::about(username, detail),
        )
        .await;
        Ok(count)
    }

    /// Every signing key in the store.
    pub async fn signing_keys(&self) -> Result<Vec<KeyRecord>, ServiceError> {
        Ok(self.store.signing_keys().await?)
    }

    /// Rotates the signing key.
    pub async fn rotate_key(&self, ctx: &Actor) -> Result<KeyRecord, ServiceError> {
        let key = self
            .keys
            .rotate(self.store.as_ref(), self.settings.algorithm)
            .await?;
        let detail = Some(format!("new key {} ({})", key.kid, key.algorithm));
        self.audit(
            EventKind::KeyRotated,
            ctx,
            Details {
                detail,
                ..Default::default()
            },
        )
        .await;
        Ok(key)
    }
}
