//! A secret's ARN (`arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf`):
//! the only way to reach a secret shared from another account (it never
//! appears in ListSecrets), and the way to name one in another region.
//! Parsed once at start-up; the store calls the ARN's region with the ARN
//! as SecretId, and a replica's ARN is the same with its own region.

use std::fmt;

/// A parsed secret ARN.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    partition: String,
    region: String,
    account: String,
    /// The resource after `secret:`: the name and Secrets Manager's
    /// six-character suffix (`db-AbCdEf`).
    resource: String,
}

impl Arn {
    /// `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`.
    /// The error says what is wrong, for the option's message.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.splitn(7, ':').collect();
        let [arn, partition, service, region, account, kind, resource] = parts[..] else {
            return Err(format!(
                "'{s}' is not a secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX)"
            ));
        };
        let bad = |what: &str| Err(format!("'{s}' is not a secret ARN: {what}"));
        if arn != "arn" || partition.is_empty() {
            return bad("it must start with arn:aws: (or another partition)");
        }
        if service != "secretsmanager" || kind != "secret" {
            return bad("the service must be secretsmanager and the resource secret:NAME");
        }
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return bad("no region (the ARN must be complete)");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the account must be 12 digits");
        }
        // A complete ARN ends with '-' and six characters; a partial one
        // (the name alone) matches in IAM but not as a SecretId.
        let suffix_ok = resource.len() > 7 && resource.as_bytes()[resource.len() - 7] == b'-';
        if !suffix_ok {
            return bad(
                "it must end with the secret's name and its six-character suffix (NAME-AbCdEf)",
            );
        }
        Ok(Self {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The secret's name: the resource without its six-character suffix.
    pub fn name(&self) -> &str {
        &self.resource[..self.resource.len() - 7]
    }

    /// The same secret's ARN in another region: its replica's (a replica
    /// keeps the name, the suffix and the account).
    pub fn in_region(&self, region: &str) -> Self {
        Self {
            region: region.into(),
            ..self.clone()
        }
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:secretsmanager:{}:{}:secret:{}",
            self.partition, self.region, self.account, self.resource
        )
    }
}

impl fmt::Debug for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_arn_gives_its_region_account_and_name() {
        let s = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:team/db-AbCdEf";
        let a = Arn::parse(s).unwrap();
        assert_eq!(a.region(), "eu-west-1");
        assert_eq!(a.account(), "111122223333");
        assert_eq!(a.name(), "team/db");
        assert_eq!(a.to_string(), s);
        assert_eq!(
            a.in_region("us-east-2").to_string(),
            "arn:aws:secretsmanager:us-east-2:111122223333:secret:team/db-AbCdEf"
        );
        let cn = Arn::parse("arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:x-AbCdEf");
        assert_eq!(cn.unwrap().name(), "x");
    }

    #[test]
    fn partial_or_foreign_arns_are_refused_with_the_reason() {
        for (s, why) in [
            ("db", "not a secret ARN"),
            (
                "arn:aws:ssm:eu-west-1:111122223333:secret:db-AbCdEf",
                "service",
            ),
            (
                "arn:aws:secretsmanager::111122223333:secret:db-AbCdEf",
                "region",
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:1111:secret:db-AbCdEf",
                "12 digits",
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db",
                "suffix",
            ),
        ] {
            let e = Arn::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
