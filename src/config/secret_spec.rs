//! `--secret` entries (and the file's `secrets` and `[[secret]]` tables):
//! a secret's name, or a full ARN with an optional path to mount it at
//! (`shared/db=arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf`).
//! The tree sees only paths; the ARNs go to the store (store/aws/regions.rs).

use serde::Deserialize;

use crate::store::SecretName;
use crate::store::aws::Arn;

/// `[[secret]]`: a secret by name, or by ARN at a path (by default its name).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SecretTable {
    pub name: Option<String>,
    pub arn: Option<String>,
    pub path: Option<String>,
}

impl SecretTable {
    /// The table as the command line spells it.
    pub fn as_option(&self) -> Result<String, String> {
        match (&self.name, &self.arn, &self.path) {
            (Some(n), None, None) => Ok(n.clone()),
            (None, Some(a), None) => Ok(a.clone()),
            (None, Some(a), Some(p)) => Ok(format!("{p}={a}")),
            (Some(_), Some(_), _) => Err("[[secret]]: give a name or an arn, not both".into()),
            (Some(_), None, Some(_)) => {
                Err("[[secret]]: path goes with arn (a secret by name is shown at its name)".into())
            }
            (None, None, _) => Err("[[secret]]: needs a name or an arn".into()),
        }
    }
}

/// The secrets exposed: every path the tree shows, and the ARN behind
/// each path mounted by ARN.
#[derive(Debug, Default)]
pub struct Secrets {
    pub paths: Vec<SecretName>,
    pub arns: Vec<(SecretName, Arn)>,
}

/// One entry: `NAME`, `ARN` or `PATH=ARN`. A name may hold '=' but never
/// ':', so `x=arn:...` is always a path and an ARN.
fn entry(s: &str) -> Result<(String, Option<Arn>), String> {
    let (path, arn) = match s.split_once("=arn:") {
        Some((p, rest)) => (Some(p), Some(format!("arn:{rest}"))),
        None if s.starts_with("arn:") => (None, Some(s.to_string())),
        None => return Ok((s.to_string(), None)),
    };
    let arn =
        Arn::parse(arn.as_deref().unwrap_or_default()).map_err(|e| format!("--secret {e}"))?;
    let path = path.map_or_else(|| arn.name().to_string(), str::to_string);
    Ok((path, Some(arn)))
}

pub fn parse(entries: &[String]) -> Result<Secrets, String> {
    let mut out = Secrets::default();
    for s in entries {
        let (path, arn) = entry(s)?;
        if !crate::tree::valid_path(&path) {
            return Err(format!(
                "--secret '{path}' cannot be a path (empty, '.' or '..' component)"
            ));
        }
        if crate::tree::reserved(&path) {
            return Err(format!(
                "--secret '{path}': names under .secretsfs/ are reserved for the mount's own files"
            ));
        }
        let path = SecretName::new(path);
        if out.paths.contains(&path) {
            return Err(format!("--secret '{path}' is given twice"));
        }
        if let Some(arn) = arn {
            // One secret at two paths would be two cached copies that a
            // write through one leaves stale at the other.
            let text = arn.to_string();
            if let Some((other, _)) = out.arns.iter().find(|(_, a)| a.to_string() == text) {
                return Err(format!(
                    "--secret {text} is given twice (at '{other}' and at '{path}'): mount a secret at one path"
                ));
            }
            out.arns.push((path.clone(), arn));
        }
        out.paths.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:team/db-AbCdEf";
    #[test]
    fn names_arns_and_paths_for_arns() {
        let other = ARN.replace("eu-west-1", "us-west-2");
        let s = parse(&["a=b".into(), ARN.into(), format!("shared/db={other}")]).unwrap();
        let paths: Vec<&str> = s.paths.iter().map(SecretName::as_str).collect();
        assert_eq!(paths, ["a=b", "team/db", "shared/db"]);
        assert_eq!(s.arns.len(), 2);
        assert_eq!(s.arns[1].0.as_str(), "shared/db");
        assert_eq!(s.arns[1].1.to_string(), other);
    }

    #[test]
    fn bad_arns_paths_and_duplicates_are_refused() {
        let e = parse(&["x=arn:aws:secretsmanager:eu-west-1:1:secret:db".into()]).unwrap_err();
        assert!(e.contains("12 digits"), "{e}");
        let e = parse(&[format!("a/../b={ARN}")]).unwrap_err();
        assert!(e.contains("cannot be a path"), "{e}");
        let e = parse(&[ARN.into(), "team/db".into()]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = parse(&[format!("one={ARN}"), format!("two={ARN}")]).unwrap_err();
        assert!(e.contains("given twice (at 'one' and at 'two')"), "{e}");
    }

    #[test]
    fn a_table_names_a_secret_or_an_arn_at_a_path() {
        let t = |name: Option<&str>, arn: Option<&str>, path: Option<&str>| SecretTable {
            name: name.map(Into::into),
            arn: arn.map(Into::into),
            path: path.map(Into::into),
        };
        assert_eq!(t(Some("db"), None, None).as_option().unwrap(), "db");
        assert_eq!(
            t(None, Some(ARN), Some("s")).as_option().unwrap(),
            format!("s={ARN}")
        );
        assert!(t(Some("db"), Some(ARN), None).as_option().is_err());
        assert!(t(Some("db"), None, Some("x")).as_option().is_err());
        assert!(t(None, None, None).as_option().is_err());
    }
}
