//! What a console page says on top after an action: done, or refused with the API's problem in
//! words; and how the console writes a spend limit.

use crate::domain::limits::{Limit, Members};

/// What the page says on top: an action done, or refused with the API's problem in words.
pub struct Notice {
    pub refused: bool,
    pub text: String,
}

impl Notice {
    pub fn done(done: Done) -> Notice {
        Notice {
            refused: false,
            text: done.said().to_owned(),
        }
    }
}

/// What an action did, said on the page it returns to (`?done=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Granted,
    Adjusted,
    PlanSet,
    LimitsSet,
    Overridden,
    KeyRevoked,
    ParentSet,
}

impl Done {
    const ALL: [Done; 7] = [
        Done::Granted,
        Done::Adjusted,
        Done::PlanSet,
        Done::LimitsSet,
        Done::Overridden,
        Done::KeyRevoked,
        Done::ParentSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Done::Granted => "granted",
            Done::Adjusted => "adjusted",
            Done::PlanSet => "plan",
            Done::LimitsSet => "limits",
            Done::Overridden => "override",
            Done::KeyRevoked => "revoked",
            Done::ParentSet => "parent",
        }
    }

    pub fn parse(text: &str) -> Option<Done> {
        Done::ALL.into_iter().find(|d| d.as_str() == text)
    }

    pub fn said(self) -> &'static str {
        match self {
            Done::Granted => "Granted.",
            Done::Adjusted => "Adjusted.",
            Done::PlanSet => "Plan set.",
            Done::ParentSet => "Parent set.",
            Done::LimitsSet => "Spend limits set.",
            Done::Overridden => "Override made.",
            Done::KeyRevoked => "Key revoked.",
        }
    }
}

/// A limit in words, as the console lists it.
pub fn limit_text(limit: &Limit) -> String {
    let who = match &limit.members {
        Members::All => String::new(),
        Members::One(subject) => format!(" for member {subject}"),
        Members::Each => " for each member".to_owned(),
    };
    format!(
        "{} {} credits a {} on {}{who}",
        limit.mode.as_str(),
        limit.credits,
        limit.period.as_str(),
        limit.feature.as_deref().unwrap_or("every feature"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_done_reads_back_from_its_name() {
        for done in Done::ALL {
            assert_eq!(Done::parse(done.as_str()), Some(done));
            assert!(done.said().ends_with('.'));
        }
        assert_eq!(Done::parse("nothing"), None);
    }
}
