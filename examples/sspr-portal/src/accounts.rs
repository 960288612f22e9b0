//! The accounts: in memory, gone when the portal stops. A real deployment
//! keeps them in its directory; what matters here is what an account holds
//! (a password hash, and the methods its owner proved they control) and
//! that a method is saved only once its verification was approved.

use std::{
    collections::HashMap,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use crate::phone::Phone;

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The enrolled authentication phone.
    pub phone: Option<Phone>,
    /// The enrolled alternate email.
    pub email: Option<String>,
}

impl Account {
    /// The enrolled methods, masked, as the account and done pages list them.
    pub fn masked_methods(&self) -> Vec<String> {
        let mut methods = Vec::new();
        if let Some(phone) = &self.phone {
            methods.push(format!("Phone {}", phone.masked()));
        }
        if let Some(email) = &self.email {
            methods.push(format!("Email {}", crate::mask::email(email)));
        }
        methods
    }
}

/// Account names: 3 to 64 of `a-z 0-9 . _ @ -`, lowercased first, so that
/// `Alice` and `alice` are one account.
pub fn normalize_name(typed: &str) -> Result<String, &'static str> {
    let name = typed.trim().to_lowercase();
    if name.is_empty() {
        return Err("Enter an account name.");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c);
    if !(3..=64).contains(&name.len()) || !name.chars().all(allowed) {
        return Err("Use 3 to 64 letters, digits, dots, dashes, underscores or @.");
    }
    Ok(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameTaken;

#[derive(Debug, Default)]
pub struct Accounts {
    map: RwLock<HashMap<String, Account>>,
}

impl Accounts {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Account>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Account>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the account unless the name is taken (checked and inserted
    /// under one lock, so two registrations cannot both win).
    pub fn create(&self, name: &str, password_hash: String) -> Result<(), NameTaken> {
        let mut map = self.write();
        if map.contains_key(name) {
            return Err(NameTaken);
        }
        map.insert(
            name.to_owned(),
            Account {
                name: name.to_owned(),
                password_hash,
                phone: None,
                email: None,
            },
        );
        Ok(())
    }

    pub fn exists(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<Account> {
        self.read().get(name).cloned()
    }

    /// Runs `f` on the account, if it exists.
    pub fn update<R>(&self, name: &str, f: impl FnOnce(&mut Account) -> R) -> Option<R> {
        self.write().get_mut(name).map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_checked() {
        assert_eq!(
            normalize_name(" Alice@Example.com ").as_deref(),
            Ok("alice@example.com")
        );
        assert_eq!(normalize_name("a.b_c-d").as_deref(), Ok("a.b_c-d"));
        assert!(normalize_name("").is_err());
        assert!(normalize_name("ab").is_err());
        assert!(normalize_name(&"a".repeat(65)).is_err());
        assert!(normalize_name("with space").is_err());
        assert!(normalize_name("émile").is_err());
    }

    #[test]
    fn a_name_is_taken_once() {
        let accounts = Accounts::default();
        assert_eq!(accounts.create("alice", "h".into()), Ok(()));
        assert_eq!(accounts.create("alice", "h2".into()), Err(NameTaken));
        assert_eq!(
            accounts.get("alice").map(|a| a.password_hash),
            Some("h".into())
        );
    }
}
