//! Secrets in configuration: `${env:NAME}` and `${file:PATH}` references, resolved at load, never printed.
//!
//! A secret field holds a template such as `"${env:HUBSPOT_TOKEN}"` or
//! `"postgres://spindle:${file:/run/secrets/pg}@db/spindle"`. Loading resolves every reference; the result is a
//! [`SecretString`] whose `Debug` shows `[REDACTED]`. A file's content is used without its trailing newline.
//! A literal value (no reference) is accepted too, but keeping credentials out of the file is the documented way.

use std::path::{Path, PathBuf};

pub use secrecy::{ExposeSecret, SecretString};

/// Where secret references are looked up. The process environment in production; a map in tests.
pub trait SecretSource {
    /// The value of environment variable `name`.
    fn var(&self, name: &str) -> Option<String>;
    /// The content of the file at `path` (relative paths are relative to the config file's folder).
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// Resolves references from the process environment and the file system.
#[derive(Debug, Clone)]
pub struct ProcessSecrets {
    base_dir: PathBuf,
}

impl ProcessSecrets {
    /// Relative `${file:...}` paths are taken from `base_dir` (the config file's folder).
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
        }
    }
}

impl SecretSource for ProcessSecrets {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.base_dir.join(path))
    }
}

/// Why a secret template could not be resolved. The message never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// True when `text` contains at least one `${env:...}` or `${file:...}` reference.
pub fn has_reference(text: &str) -> bool {
    text.contains("${env:") || text.contains("${file:")
}

/// Replaces every reference in `template` with its value.
pub fn resolve(template: &str, source: &dyn SecretSource) -> Result<SecretString, SecretError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(SecretError {
                message: "unterminated secret reference".into(),
                hint: "write `${env:NAME}` or `${file:PATH}`".into(),
            });
        };
        let reference = &after[..end];
        let value = match reference.split_once(':') {
            Some(("env", name)) if !name.is_empty() => {
                source.var(name).ok_or_else(|| SecretError {
                    message: format!("environment variable `{name}` is not set"),
                    hint: format!(
                        "export {name}=... before starting spindle, or use `${{file:PATH}}`"
                    ),
                })?
            }
            Some(("file", path)) if !path.is_empty() => {
                let content = source.read_file(Path::new(path)).map_err(|err| SecretError {
                    message: format!("cannot read secret file `{path}`: {err}"),
                    hint: "check the path (relative paths start at the config file's folder) and its permissions"
                        .into(),
                })?;
                content
                    .strip_suffix('\n')
                    .map(|c| c.strip_suffix('\r').unwrap_or(c))
                    .unwrap_or(&content)
                    .to_owned()
            }
            _ => {
                return Err(SecretError {
                    message: format!("unknown secret reference `${{{reference}}}`"),
                    hint: "write `${env:NAME}` or `${file:PATH}`".into(),
                });
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(SecretString::from(out))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Fake(HashMap<&'static str, &'static str>);

    impl SecretSource for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            match path.to_str() {
                Some("pg.txt") => Ok("s3cret\n".into()),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file",
                )),
            }
        }
    }

    #[test]
    fn references_are_replaced_inside_text() {
        let env = Fake(HashMap::from([("TOKEN", "abc")]));
        let url = resolve("postgres://u:${file:pg.txt}@h/db?x=${env:TOKEN}", &env).unwrap();
        assert_eq!(url.expose_secret(), "postgres://u:s3cret@h/db?x=abc");
        assert_eq!(resolve("plain", &env).unwrap().expose_secret(), "plain");
    }

    #[test]
    fn failures_explain_without_values() {
        let env = Fake(HashMap::new());
        let err = resolve("${env:MISSING}", &env).unwrap_err();
        assert_eq!(err.message, "environment variable `MISSING` is not set");
        assert!(
            resolve("${vault:x}", &env)
                .unwrap_err()
                .message
                .contains("unknown secret reference")
        );
        assert!(
            resolve("${env:X", &env)
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(
            resolve("${file:nope}", &env)
                .unwrap_err()
                .message
                .contains("cannot read secret file")
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let env = Fake(HashMap::from([("TOKEN", "abc123")]));
        let secret = resolve("${env:TOKEN}", &env).unwrap();
        assert!(!format!("{secret:?}").contains("abc123"));
    }
}
