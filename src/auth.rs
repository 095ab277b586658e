//! Users, roles and credentials for the HTTP API: a users file of argon2 hashes, HTTP Basic
//! and bearer tokens. Roles: `admin` (everything), `operator` (lock, renew and unlock its own
//! holders, read), `viewer` (read).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("unknown role {other:?}: use admin, operator or viewer")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct UserEntry {
    name: String,
    role: Role,
    password_hash: String,
    token_hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Whether this principal may act for `holder`: admins for anyone, others for holders
    /// named after them (`NAME`, `NAME@...`, `NAME/...`).
    pub fn owns(&self, holder: &str) -> bool {
        self.role == Role::Admin
            || holder == self.name
            || holder.strip_prefix(self.name.as_str()).is_some_and(|rest| rest.starts_with('@') || rest.starts_with('/'))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No or unusable credentials.
    Unauthenticated(String),
}

/// The loaded users file, with a cache of credentials already verified (argon2 is slow on
/// purpose; the cache keys are keyed hashes, so it holds no password).
pub struct Users {
    users: Vec<UserEntry>,
    hasher: RandomState,
    verified: Mutex<HashMap<u64, Principal>>,
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn hash(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

fn verify(secret: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--users {}: {e}", path.display()))?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| format!("--users {}: {}", path.display(), e.message()))?;
        if file.user.is_empty() {
            return Err(format!("--users {}: no users; add one with `lockmesh users add`", path.display()));
        }
        Ok(Users { users: file.user, hasher: RandomState::new(), verified: Mutex::new(HashMap::new()) })
    }

    /// Adds (or replaces) a user in the file; returns the user's new bearer token.
    pub fn add(path: &Path, name: &str, role: Role, password: &str) -> Result<String, String> {
        if !valid_user_name(name) {
            return Err(format!("invalid user name {name:?}: use 1-64 of A-Z a-z 0-9 - _ ."));
        }
        if password.len() < 8 {
            return Err("the password must have at least 8 characters".into());
        }
        let mut file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<UsersFile>(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
        let token = format!("{name}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        file.user.retain(|u| u.name != name);
        file.user.push(UserEntry { name: name.to_string(), role, password_hash: hash(password)?, token_hash: hash(&token)? });
        let text = toml::to_string(&file).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        out.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(token)
    }

    /// A credential verified before, without running argon2 again.
    pub fn cached(&self, header: Option<&str>) -> Option<Principal> {
        let key = self.hasher.hash_one(header?);
        self.verified.lock().ok().and_then(|c| c.get(&key).cloned())
    }

    /// Checks an `Authorization` header value: `Basic base64(user:password)` or
    /// `Bearer TOKEN`. Slow on a cache miss (argon2): callers bound how many run at once.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or_else(|| AuthError::Unauthenticated("credentials required (HTTP Basic or a bearer token)".into()))?;
        let key = self.hasher.hash_one(header);
        if let Some(p) = self.verified.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(p);
        }
        let bad = || AuthError::Unauthenticated("wrong user, password or token".into());
        let principal = if let Some(encoded) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (name, password) = text.split_once(':').ok_or_else(bad)?;
            let user = self.users.iter().find(|u| u.name == name).ok_or_else(bad)?;
            if !verify(password, &user.password_hash) {
                return Err(bad());
            }
            Principal { name: user.name.clone(), role: user.role }
        } else if let Some(token) = header.strip_prefix("Bearer ") {
            let token = token.trim();
            // The random part is base64url, which has no '.'; the name may.
            let name = token.rsplit_once('.').map(|(n, _)| n).ok_or_else(bad)?;
            let user = self.users.iter().find(|u| u.name == name).ok_or_else(bad)?;
            if !verify(token, &user.token_hash) {
                return Err(bad());
            }
            Principal { name: user.name.clone(), role: user.role }
        } else {
            return Err(AuthError::Unauthenticated("use HTTP Basic or a bearer token".into()));
        };
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, principal.clone());
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_add_then_basic_and_bearer_authenticate() {
        let path = std::env::temp_dir().join(format!("lockmesh-users-{}.toml", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let token = Users::add(&path, "ops", Role::Operator, "correct horse").unwrap();
        Users::add(&path, "view", Role::Viewer, "battery staple").unwrap();
        assert!(Users::add(&path, "bad name", Role::Viewer, "long enough").is_err());
        assert!(Users::add(&path, "short", Role::Viewer, "123").is_err());
        let users = Users::load(&path).unwrap();
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:correct horse"));
        assert_eq!(users.authenticate(Some(&basic)).unwrap(), Principal { name: "ops".into(), role: Role::Operator });
        assert_eq!(users.authenticate(Some(&basic)).unwrap().role, Role::Operator, "cached");
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:wrong"));
        assert!(users.authenticate(Some(&wrong)).is_err());
        assert_eq!(users.authenticate(Some(&format!("Bearer {token}"))).unwrap().name, "ops");
        assert!(users.authenticate(Some("Bearer ops.forged")).is_err());
        assert!(users.authenticate(None).is_err());
        assert!(users.authenticate(Some("Digest x")).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse") && !text.contains(&token), "only hashes are stored");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn operators_own_only_their_holders() {
        let p = Principal { name: "ops".into(), role: Role::Operator };
        assert!(p.owns("ops") && p.owns("ops@10.0.0.1") && p.owns("ops/job-1"));
        assert!(!p.owns("opsx") && !p.owns("admin@10.0.0.1"));
        assert!(Principal { name: "a".into(), role: Role::Admin }.owns("anyone"));
    }
}
