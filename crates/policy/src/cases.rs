//! Operator-written test cases for a policy (`p3ak policy test`).
//!
//! ```yaml
//! cases:
//!   - name: small payment to a known payee
//!     agent: ledger
//!     action: bank.payment_send
//!     args: { payee: landlord, amount: 9000 }
//!     context: { totals: { paid_24h: 0 } }
//!     expect: { escalate: 1 }
//! ```
//!
//! `expect` is `allow`, `reject`, `{ allow: TIER }`, or `{ escalate: LEVEL }` (optionally with
//! `confirm_twice: BOOL`); `rules: [ID, ...]` additionally checks the deciding rule ids.
//! `declared: TIER` is a tier declared by a third-party plugin; a first-party one is
//! `declared: { tier: TIER, origin: first_party }`.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::error::{Diagnostic, PolicyError, Position};
use crate::policy::Policy;
use crate::types::{Context, Decision, Declared, Level, Request, Tier, Verdict};

/// The decision a case expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Allowed, optionally at a given tier.
    Allow(Option<Tier>),
    /// Rejected.
    Reject,
    /// Escalated to a level, optionally checking `confirm_twice`.
    Escalate {
        /// The level.
        level: Level,
        /// Whether it must (not) ask twice, if given.
        confirm_twice: Option<bool>,
    },
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow(None) => f.write_str("allow"),
            Self::Allow(Some(tier)) => write!(f, "allow ({tier})"),
            Self::Reject => f.write_str("reject"),
            Self::Escalate {
                level,
                confirm_twice,
            } => {
                write!(f, "escalate to level {level}")?;
                match confirm_twice {
                    Some(true) => f.write_str(", confirm twice"),
                    Some(false) => f.write_str(", confirm once"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Expect {
    fn accepts(&self, decision: &Decision) -> bool {
        match (self, decision) {
            (Self::Allow(None), Decision::Allow { .. }) | (Self::Reject, Decision::Reject) => true,
            (Self::Allow(Some(want)), Decision::Allow { tier }) => want == tier,
            (
                Self::Escalate {
                    level: want,
                    confirm_twice,
                },
                Decision::Escalate {
                    level,
                    confirm_twice: got,
                    ..
                },
            ) => want == level && confirm_twice.is_none_or(|c| c == *got),
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpectVisitor;
        impl<'de> Visitor<'de> for ExpectVisitor {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`allow`, `reject`, `{ allow: TIER }` or `{ escalate: LEVEL }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
                match v {
                    "allow" => Ok(Expect::Allow(None)),
                    "reject" => Ok(Expect::Reject),
                    other => Err(E::custom(format!(
                        "unknown expectation `{other}`: use `allow`, `reject`, `{{ allow: TIER }}` or `{{ escalate: LEVEL }}`"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expect, A::Error> {
                let mut allow: Option<Tier> = None;
                let mut escalate: Option<Level> = None;
                let mut confirm_twice: Option<bool> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "allow" => allow = Some(map.next_value()?),
                        "escalate" => escalate = Some(map.next_value()?),
                        "confirm_twice" => confirm_twice = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["allow", "escalate", "confirm_twice"],
                            ));
                        }
                    }
                }
                match (allow, escalate, confirm_twice) {
                    (Some(tier), None, None) => Ok(Expect::Allow(Some(tier))),
                    (None, Some(level), confirm_twice) if level.get() > 0 => Ok(Expect::Escalate {
                        level,
                        confirm_twice,
                    }),
                    (None, Some(_), _) => Err(de::Error::custom(
                        "`escalate` needs a level from 1 to 5 (level 0 is `allow`)",
                    )),
                    _ => Err(de::Error::custom(
                        "give exactly one of `allow: TIER` or `escalate: LEVEL`",
                    )),
                }
            }
        }
        deserializer.deserialize_any(ExpectVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    agent: String,
    action: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
    #[serde(default)]
    credentials: Vec<String>,
    declared: Option<Declared>,
    #[serde(default)]
    context: Context,
    expect: Expect,
    rules: Option<Vec<String>>,
}

/// One case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// What the case is about.
    pub name: String,
    /// Where it starts in the cases file.
    pub position: Position,
    /// The request to decide.
    pub request: Request,
    /// The expected decision.
    pub expect: Expect,
    /// The expected deciding rule ids, if given (order does not matter).
    pub rules: Option<Vec<String>>,
}

/// A parsed cases file.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// The result of running one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The case's name.
    pub name: String,
    /// Where the case is.
    pub position: Position,
    /// What the case expected.
    pub expected: String,
    /// What the policy decided.
    pub verdict: Verdict,
    /// Why it failed; `None` if it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl Outcome {
    /// Whether the case passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl Suite {
    /// Parses a cases file.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let raw: RawSuite = serde_saphyr::from_str(text)
            .map_err(|e| PolicyError::one(Diagnostic::from_yaml(&e)))?;
        let mut cases = Vec::with_capacity(raw.cases.len());
        for case in raw.cases {
            let position = Position::of(&case.referenced);
            let c = case.value;
            let args = match c.args {
                None | Some(serde_json::Value::Null) => {
                    serde_json::Value::Object(serde_json::Map::new())
                }
                Some(args @ serde_json::Value::Object(_)) => args,
                Some(_) => {
                    return Err(PolicyError::one(Diagnostic::new(
                        position,
                        format!("case `{}`: `args` must be a mapping", c.name),
                    )));
                }
            };
            cases.push(Case {
                name: c.name,
                position,
                request: Request {
                    agent: c.agent,
                    action: c.action,
                    args,
                    credentials: c.credentials,
                    declared: c.declared,
                    context: c.context,
                },
                expect: c.expect,
                rules: c.rules,
            });
        }
        Ok(Self { cases })
    }

    /// Runs every case against `policy`.
    #[must_use]
    pub fn run(&self, policy: &Policy) -> Vec<Outcome> {
        self.cases
            .iter()
            .map(|case| {
                let verdict = policy.decide(&case.request);
                let mut failure = None;
                if !case.expect.accepts(&verdict.decision) {
                    failure = Some(format!(
                        "expected {}, got {}",
                        case.expect, verdict.decision
                    ));
                } else if let Some(want) = &case.rules {
                    let mut want = want.clone();
                    let mut got = verdict.rules.clone();
                    want.sort();
                    got.sort();
                    if want != got {
                        failure = Some(format!(
                            "expected deciding rules [{}], got [{}]",
                            want.join(", "),
                            got.join(", ")
                        ));
                    }
                }
                Outcome {
                    name: case.name.clone(),
                    position: case.position,
                    expected: case.expect.to_string(),
                    verdict,
                    failure,
                }
            })
            .collect()
    }
}
