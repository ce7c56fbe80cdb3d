//! Which migration, if any, takes an appspace's data from one version's
//! schema to another's (docs/upgrades.md).

use crate::package::Manifest;

/// Whose migrate command converts the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The version being moved to (an upgrade: it knows the older schemas).
    Target,
    /// The version being left (a downgrade: only it knows both schemas).
    Current,
}

/// A conversion of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The data's schema now.
    pub from: u32,
    /// The schema it is converted to.
    pub to: u32,
    /// Whose command does it.
    pub runner: Runner,
    /// The command with FROM and TO appended.
    pub argv: Vec<String>,
    /// How long it may run (its manifest's `data.migrate_timeout`).
    pub timeout: std::time::Duration,
}

/// Why the versions cannot be swapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Incompatible(pub String);

/// The migration from `current` to `target` (`None`: same schema, the
/// data is used as it is), or why there is none.
pub fn plan(current: &Manifest, target: &Manifest) -> Result<Option<Migration>, Incompatible> {
    let (from, to) = (current.data.schema, target.data.schema);
    let (runner, by) = match from.cmp(&to) {
        std::cmp::Ordering::Equal => return Ok(None),
        std::cmp::Ordering::Less => {
            if target.data.oldest > from {
                return Err(Incompatible(format!(
                    "{} {} converts data from schema {} on (data.oldest_schema); this appspace's data is schema {from}: upgrade to an intermediate version first",
                    target.name, target.version, target.data.oldest
                )));
            }
            (Runner::Target, target)
        }
        std::cmp::Ordering::Greater => {
            if current.data.oldest > to {
                return Err(Incompatible(format!(
                    "{} {} keeps schema {to}, and {} {} converts its data back only to schema {} (data.oldest_schema): this downgrade would lose data",
                    target.name, target.version, current.name, current.version, current.data.oldest
                )));
            }
            (Runner::Current, current)
        }
    };
    // The manifest check guarantees a command whenever oldest < schema.
    let mut argv = by.data.migrate.clone().ok_or_else(|| {
        Incompatible(format!("{} {} has no migrate command", by.name, by.version))
    })?;
    argv.extend([from.to_string(), to.to_string()]);
    Ok(Some(Migration {
        from,
        to,
        runner,
        argv,
        timeout: by.data.migrate_timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str, data: &str) -> Manifest {
        crate::package::parse_manifest(&format!(
            "name = \"a\"\nversion = \"{version}\"\nruntime = \"native\"\nentrypoint = \"a\"\n[data]\n{data}\n"
        ))
        .unwrap()
    }

    #[test]
    fn upgrades_run_the_new_version_and_downgrades_the_old() {
        let v1 = manifest("1.0.0", "schema = 1");
        let v2 = manifest(
            "2.0.0",
            "schema = 2\noldest_schema = 1\nmigrate = [\"a\", \"migrate\"]",
        );
        let v3 = manifest(
            "3.0.0",
            "schema = 3\noldest_schema = 2\nmigrate = [\"a\", \"m\"]",
        );
        let v1b = manifest("1.1.0", "schema = 1");
        assert_eq!(plan(&v1, &v1b).unwrap(), None);
        let up = plan(&v1, &v2).unwrap().unwrap();
        assert_eq!(up.runner, Runner::Target);
        assert_eq!(up.argv, ["a", "migrate", "1", "2"]);
        let down = plan(&v2, &v1).unwrap().unwrap();
        assert_eq!(down.runner, Runner::Current);
        assert_eq!(down.argv, ["a", "migrate", "2", "1"]);
        let skip = plan(&v1, &v3).unwrap_err().to_string();
        assert!(skip.contains("intermediate"), "{skip}");
        let lossy = plan(&v3, &v1).unwrap_err().to_string();
        assert!(lossy.contains("would lose data"), "{lossy}");
    }
}
